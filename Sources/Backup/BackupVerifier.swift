import AuditChain
import BinaryCoding
import Foundation
import KVStore
import Sealing

/// Checks a backup where it lies. Quick: the manifest is this directory's, its signature holds
/// under a member certificate the cluster CA issued, the backup key unwraps its data key and the
/// MAC holds, and every chunk file has the manifest's size and hash. Deep, in addition: every
/// chunk opens and decodes, the records are in strict key order and each in its archive, the
/// counts, the content digest and the audit head are the manifest's, and the audit chain in the
/// archive links and hashes from its base to its head with every checkpoint's signature. The
/// first failure is thrown as a `BackupProblem` naming the file and what is wrong.
public struct BackupVerifier: Sendable {
    public let directory: String
    public let kek: any MasterKeyProvider
    /// The cluster CA's certificates (DER).
    public let authorities: [[UInt8]]

    public init(directory: String, kek: any MasterKeyProvider, authorities: [[UInt8]]) {
        self.directory = directory
        self.kek = kek
        self.authorities = authorities
    }

    /// What a verification checked.
    public struct Report: Sendable {
        public var manifest: BackupManifest
        public var chunks = 0
        public var bytes: UInt64 = 0
        /// Deep only: records decoded and audit entries re-hashed.
        public var records: UInt64 = 0
        public var auditEntries = 0
    }

    public func verify(deep: Bool) throws -> Report {
        let (manifest, id, cipher) = try openManifest()
        var report = Report(manifest: manifest)
        for artefact in BackupArtefact.allCases {
            for chunk in manifest.chunks(artefact) {
                _ = try chunkFile(chunk)
                report.chunks += 1
                report.bytes += chunk.storedBytes
            }
        }
        guard deep else { return report }
        var tally = BackupTally()
        var audit = AuditCheck(base: manifest.auditBase, authorities: authorities)
        for artefact in BackupArtefact.allCases {
            var last: [UInt8]?
            try forEachRecord(artefact, manifest, id, cipher) { key, value in
                if let last, !last.lexicographicallyPrecedes(key) {
                    throw BackupProblem("the \(artefact) archive's records are out of order")
                }
                last = key
                guard BackupContents.artefacts(of: key).contains(artefact) else {
                    throw BackupProblem("the \(artefact) archive holds a record that belongs elsewhere")
                }
                tally.add(key, value, to: artefact)
                if artefact == .data { try audit.add(key, value) }
                report.records += 1
            }
        }
        try compare(tally, audit, with: manifest)
        report.auditEntries = audit.verifier.checked
        return report
    }

    /// Calls `body` with each record of one archive, in order (the chunks' hashes checked first).
    public func forEachRecord(
        _ artefact: BackupArtefact, _ body: ([UInt8], [UInt8]) throws -> Void
    ) throws {
        let (manifest, id, cipher) = try openManifest()
        try forEachRecord(artefact, manifest, id, cipher, body)
    }

    /// Both archives' records merged in key order (the key set, in both, once), opened a chunk
    /// at a time: what a restore loads. Verify the backup (deep) first.
    public func restoredRecords() throws -> (manifest: BackupManifest, next: () throws -> ([UInt8], [UInt8])?) {
        let (manifest, id, cipher) = try openManifest()
        var data = RecordCursor(artefact: .data, manifest: manifest, id: id, cipher: cipher, verifier: self)
        var keys = RecordCursor(artefact: .keys, manifest: manifest, id: id, cipher: cipher, verifier: self)
        var (nextData, nextKey) = (try data.next(), try keys.next())
        return (
            manifest,
            {
                switch (nextData, nextKey) {
                case (nil, nil):
                    return nil
                case (let record?, nil):
                    nextData = try data.next()
                    return record
                case (nil, let record?):
                    nextKey = try keys.next()
                    return record
                case (let fromData?, let fromKeys?):
                    if fromData.0 == fromKeys.0 {
                        guard fromData.1 == fromKeys.1 else {
                            throw BackupProblem("the data and key archives hold different values for one key")
                        }
                        (nextData, nextKey) = (try data.next(), try keys.next())
                        return fromData
                    }
                    if fromData.0.lexicographicallyPrecedes(fromKeys.0) {
                        nextData = try data.next()
                        return fromData
                    }
                    nextKey = try keys.next()
                    return fromKeys
                }
            }
        )
    }

    /// One archive's records, a chunk opened at a time.
    struct RecordCursor {
        let artefact: BackupArtefact
        let manifest: BackupManifest
        let id: BackupID
        let cipher: AES256GCM
        let verifier: BackupVerifier
        private var chunk = -1
        private var reader = BinaryReader([])
        private var left: UInt32 = 0

        init(
            artefact: BackupArtefact, manifest: BackupManifest, id: BackupID, cipher: AES256GCM,
            verifier: BackupVerifier
        ) {
            self.artefact = artefact
            self.manifest = manifest
            self.id = id
            self.cipher = cipher
            self.verifier = verifier
        }

        mutating func next() throws -> ([UInt8], [UInt8])? {
            let chunks = manifest.chunks(artefact)
            while left == 0 {
                guard reader.isAtEnd else {
                    throw BackupProblem("\(chunks[chunk].file) holds more records than it says")
                }
                chunk += 1
                guard chunk < chunks.count else { return nil }
                let raw = try BackupChunks.open(
                    try verifier.chunkFile(chunks[chunk]), chunks[chunk], id, artefact.stream, index: chunk,
                    cipher: cipher)
                reader = BinaryReader(raw)
                left = chunks[chunk].records
            }
            guard let key = reader.blob(), let value = reader.blob() else {
                throw BackupProblem("\(chunks[chunk].file): a record does not decode")
            }
            left -= 1
            return (key, value)
        }
    }

    private func forEachRecord(
        _ artefact: BackupArtefact, _ manifest: BackupManifest, _ id: BackupID, _ cipher: AES256GCM,
        _ body: ([UInt8], [UInt8]) throws -> Void
    ) throws {
        for (index, chunk) in manifest.chunks(artefact).enumerated() {
            let raw = try BackupChunks.open(
                try chunkFile(chunk), chunk, id, artefact.stream, index: index, cipher: cipher)
            try BackupChunks.forEachRecord(in: raw, chunk, body)
        }
    }

    // MARK: The manifest

    /// The manifest, once it is shown to be this backup's, signed by a member and sealed under
    /// its data key; the data key's cipher.
    private func openManifest() throws -> (BackupManifest, BackupID, AES256GCM) {
        let name = (directory as NSString).lastPathComponent
        guard let id = BackupID(name) else { throw BackupProblem("\(name) is not a backup id") }
        let sealed = try SealedManifest.read(directory)
        let manifest = try sealed.decode(BackupManifest.self)
        guard manifest.format == BackupManifest.currentFormat else {
            throw BackupProblem(
                "manifest.json is format \(manifest.format); this binary reads \(BackupManifest.currentFormat)")
        }
        guard manifest.backupID == id.description else {
            throw BackupProblem("manifest.json is backup \(manifest.backupID)'s, not \(id)'s: it was swapped")
        }
        try sealed.checkSigner(member: manifest.member, authorities: authorities)
        let cipher = try sealed.dataCipher(
            wrappedKey: manifest.wrappedKey, wrappedBy: manifest.keyProvider, kek: kek,
            context: BackupWriter.wrapContext(id))
        return (manifest, id, cipher)
    }

    /// A chunk file, once its size and hash are the manifest's.
    func chunkFile(_ chunk: BackupManifest.Chunk) throws -> [UInt8] {
        guard chunk.file.hasSuffix(".chunk"), !chunk.file.contains("/") else {
            throw BackupProblem("manifest.json names a chunk file \(chunk.file)")
        }
        let path = directory + "/" + chunk.file
        guard let size = BackupFiles.size(path) else { throw BackupProblem("\(chunk.file) is missing") }
        guard size == chunk.storedBytes else {
            throw BackupProblem(
                "\(chunk.file) has \(size) bytes, the manifest says \(chunk.storedBytes)\(size < chunk.storedBytes ? ": truncated" : "")"
            )
        }
        let file = try BackupFiles.read(path, limit: Int(chunk.storedBytes))
        guard AuditChain.hex(HMACSHA256.sha256(file)) == chunk.sha256 else {
            throw BackupProblem(
                "\(chunk.file) differs from the manifest's hash (changed, or spliced from another backup)")
        }
        return file
    }

    private func compare(_ tally: BackupTally, _ audit: AuditCheck, with manifest: BackupManifest) throws {
        guard tally.counts == manifest.counts else {
            throw BackupProblem(
                "the archives' counts \(tally.counts.sorted { $0.key < $1.key }) differ from the manifest's")
        }
        guard tally.contentDigest() == manifest.contentDigest else {
            throw BackupProblem("the data archive's digest differs from the manifest's")
        }
        guard BackupManifest.Head(tally.auditHead) == manifest.auditHead else {
            throw BackupProblem("the archived audit head differs from the manifest's")
        }
        var verifier = audit.verifier
        verifier.finish(at: tally.auditHead)
        if let problem = audit.problem ?? verifier.problem.map({ "entry \($0.seq): \($0.why)" }) {
            throw BackupProblem("the archived audit trail does not hold: \(problem)")
        }
    }

}

/// The archived audit trail, entry by entry as the data archive yields them (in key order, so
/// in sequence): links and hashes from the base, and every checkpoint's signature.
struct AuditCheck {
    var verifier: AuditVerifier
    var checkpoints: CheckpointChecker
    var problem: String?

    init(base: BackupManifest.Head, authorities: [[UInt8]]) {
        let hash = [UInt8](hexString: base.hash) ?? AuditChain.genesis
        verifier = AuditVerifier(after: hash.count == 32 ? AuditHead(seq: base.seq, hash: hash) : .empty)
        checkpoints = CheckpointChecker(chain: AuditChain.crmChain, authorities: authorities)
    }

    mutating func add(_ key: [UInt8], _ value: [UInt8]) throws {
        guard key.starts(with: BackupContents.auditEntries), problem == nil else { return }
        var reader = BinaryReader(Array(key.dropFirst(BackupContents.auditEntries.count)))
        let seq = reader.u64() ?? 0
        let link = CRMValue(stored: value).flatMap { AuditLink(encoded: $0.payload) }
        guard verifier.check(seq: seq, link), let link else { return }
        if let why = checkpoints.check(link) { problem = "entry \(seq): \(why)" }
    }
}
