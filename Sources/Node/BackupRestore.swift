import Backup
import CRM
import Foundation
import KVStore
import Logging
import Raft
import RaftStorage
import Sealing
import Storage

/// Restores a backup, offline, into the data directory of a member's config, which must not
/// exist or be empty. The backup is deep-verified first. The member's store is made with its own
/// master key, loaded with both archives merged in key order, and read back: its counts and
/// content digest must be the manifest's. Its log starts at the backup's
/// applied index and term with this member as the only voter (the others join as learners), and
/// holds one committed entry: the `backup.restore` audit entry, which the member applies at
/// start, linking the restored chain to the restore.
public enum BackupRestore {
    public struct Report: Sendable {
        public var manifest: BackupManifest
        public var records: Int
        public var seconds: Double
    }

    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    public static func run(
        config: NodeConfig, backup directory: String, backupKeyFile: String, logger: Logger
    ) throws -> Report {
        let started = Date()
        let backupKey = try FileMasterKeyProvider(path: backupKeyFile)
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: config.dataDir), !existing.isEmpty {
            throw Refusal(
                description:
                    "\(config.dataDir) is not empty: a restore goes into a new data directory, never over a member's data"
            )
        }
        guard let ca = FileManager.default.contents(atPath: config.tls.ca) else {
            throw Refusal(description: "tls.ca \(config.tls.ca) cannot be read")
        }
        let verifier = BackupVerifier(
            directory: directory, kek: backupKey, authorities: ECDSASignature.certificatesDER(pem: Array(ca)))
        let manifest = try verifier.verify(deep: true).manifest
        try FileManager.default.createDirectory(
            atPath: config.dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let storage = try StorageEngine.open(
            path: config.dataDir + "/db", masterKey: try FileMasterKeyProvider(path: config.masterKeyFile),
            logger: logger)
        defer { storage.close() }
        let log = try DurableLogStore.open(engine: storage, logger: logger)
        let kv = try ReplicatedKV(storage: storage, logger: logger)
        let (_, next) = try verifier.restoredRecords()
        let position = ReplicatedKV.Position(
            index: manifest.appliedIndex, term: manifest.term, logClockMillis: manifest.logTimeMillis)
        let records = try kv.restore(at: position) { try next().map { (key: $0.0, value: $0.1) } }
        // Read back through the new store: the same counts and digest as the backup's manifest.
        let restored = try BackupDigest.of(try kv.pinState())
        guard restored.counts == manifest.counts, restored.contentDigest == manifest.contentDigest else {
            throw Refusal(description: "the restored store reads back differently from the backup's manifest")
        }
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(
                index: position.index, term: position.term, configuration: Configuration(voters: [config.id])),
            data: [])
        let entry = Entry(
            term: position.term, index: position.index + 1, kind: .normal,
            data: restoreEntry(manifest, member: config.id, logClock: position.logClockMillis, kv: kv).encoded)
        try log.save(
            snapshot: snapshot, entries: [entry],
            hardState: HardState(term: position.term, vote: 0, commit: position.index + 1))
        logger.notice(
            "backup restored",
            metadata: [
                "backup": "\(manifest.backupID)", "index": "\(position.index)", "records": "\(records)",
                "data_dir": "\(config.dataDir)",
            ])
        return Report(manifest: manifest, records: records, seconds: Date().timeIntervalSince(started))
    }

    /// The command of the restore's own log entry: the `backup.restore` audit entry, naming the
    /// backup and the audit head it restored, proposed by this member.
    static func restoreEntry(
        _ manifest: BackupManifest, member: UInt64, logClock: UInt64, kv: ReplicatedKV
    ) -> KVCommand {
        let entry = AuditEntry(
            action: "backup.restore", actor: "crm://member/\(member)", application: "crm://member/\(member)",
            reason:
                "backup \(manifest.backupID) of member \(manifest.member) at index \(manifest.appliedIndex); audit head \(manifest.auditHead.seq) \(manifest.auditHead.hash)"
        )
        let transaction = Transaction(operations: [AuditTrail(kv: kv).append(entry)])
        return KVCommand.transaction(
            session: KVCommand.noSession, sequence: 0, owner: "crm://member/\(member)",
            proposedAtMillis: max(logClock, WallClock.nowMillis()), transaction)
    }
}
