import AuditChain
import Foundation
import KVStore
import Sealing

/// Takes a logical backup of one consistent view of the applied state into a target directory:
/// chunks first, the manifest and its seal last, all in `.partial-<id>`, which is renamed to
/// `<id>` only when everything is durable. A backup interrupted at any point leaves at most a
/// partial directory, which is never listed as a backup.
public struct BackupWriter: Sendable {
    /// What the manifest says about where the backup comes from.
    public struct Origin: Sendable {
        public var member: UInt64
        public var binaryVersion: String
        public var createdAtMillis: UInt64
        public var previous: String?

        public init(member: UInt64, binaryVersion: String, createdAtMillis: UInt64, previous: String? = nil) {
            self.member = member
            self.binaryVersion = binaryVersion
            self.createdAtMillis = createdAtMillis
            self.previous = previous
        }
    }

    public let kek: any MasterKeyProvider
    public let signer: BackupSigner
    /// Called before each chunk file is written (debug builds' fault hook: a slow disk).
    public var beforeEachChunk: @Sendable () -> Void = {}

    public init(kek: any MasterKeyProvider, signer: BackupSigner) {
        self.kek = kek
        self.signer = signer
    }

    /// Writes the backup `id` of `state` into `target`; answers its manifest.
    public func write(_ state: PinnedState, id: BackupID, origin: Origin, into target: String) throws -> BackupManifest
    {
        let partial = BackupStore.partialPath(target, id)
        try FileManager.default.createDirectory(
            atPath: partial, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            let manifest = try writeContents(state, id: id, origin: origin, into: partial)
            try BackupFiles.syncDirectory(partial)
            try FileManager.default.moveItem(atPath: partial, toPath: BackupStore.path(target, id))
            try BackupFiles.syncDirectory(target)
            return manifest
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
    }

    private func writeContents(
        _ state: PinnedState, id: BackupID, origin: Origin, into directory: String
    ) throws -> BackupManifest {
        let dataKey = try SymmetricKey.generate()
        let cipher = AES256GCM(key: dataKey)
        let sinks = [
            BackupArtefact.data: ChunkSink(
                directory: directory, stream: BackupArtefact.data.stream, id: id, cipher: cipher,
                beforeEachChunk: beforeEachChunk),
            .keys: ChunkSink(
                directory: directory, stream: BackupArtefact.keys.stream, id: id, cipher: cipher,
                beforeEachChunk: beforeEachChunk),
        ]
        var tally = BackupTally()
        try state.forEachRecord(under: BackedUpState.prefixes) { key, value in
            for artefact in BackupContents.artefacts(of: key) {
                try sinks[artefact]!.add(key, value)
                tally.add(key, value, to: artefact)
            }
        }
        let wrapped = try dataKey.withUnsafeBytes { try kek.wrap($0, context: Self.wrapContext(id)) }
        let manifest = BackupManifest(
            format: BackupManifest.currentFormat, backupID: id.description, member: origin.member,
            appliedIndex: state.position.index, term: state.position.term,
            logTimeMillis: state.position.logClockMillis, createdAtMillis: origin.createdAtMillis,
            binaryVersion: origin.binaryVersion, keySetVersion: tally.keySetVersion,
            auditHead: .init(tally.auditHead), auditBase: .init(tally.auditBase), counts: tally.counts,
            contentDigest: tally.contentDigest(), data: try sinks[.data]!.finish(), keys: try sinks[.keys]!.finish(),
            wrappedKey: AuditChain.hex(wrapped), keyProvider: kek.keyID, previous: origin.previous)
        try BackupSeal.write(try manifest.encoded(), dataKey: dataKey, signer: signer, into: directory)
        return manifest
    }

    /// The data key is wrapped for one backup id: a wrapped key moved to another manifest does not unwrap.
    static func wrapContext(_ id: BackupID) -> [UInt8] { Array("crm.backup.v1 data key ".utf8) + id.bytes }
}
