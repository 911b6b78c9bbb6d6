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
///
/// To a point in time: after the backup is loaded and read back, the log segments that follow
/// it (from the targets given) are replayed through the state machine's own apply up to a log
/// index, or up to the last entry proposed at or before a time.
public enum BackupRestore {
    public struct Report: Sendable {
        public var manifest: BackupManifest
        public var records: Int
        /// Segment entries replayed after the backup, and the index and log time reached.
        public var replayedEntries = 0
        public var index: UInt64
        public var logTimeMillis: UInt64
        /// The restored state's counts and content digest (the manifest's, with no replay).
        public var counts: [String: UInt64]
        public var contentDigest: String
        public var seconds: Double
    }

    /// Where a restore stops: the backup's own index, a log index, or a time.
    public enum Point: Sendable, Equatable {
        case backup
        case index(UInt64)
        case time(millis: UInt64)
    }

    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    public static func run(
        config: NodeConfig, backup directory: String, backupKeyFile: String, to point: Point = .backup,
        segmentTargets: [String] = [], logger: Logger
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
        let backupPosition = ReplicatedKV.Position(
            index: manifest.appliedIndex, term: manifest.term, logClockMillis: manifest.logTimeMillis)
        let records = try kv.restore(at: backupPosition) { try next().map { (key: $0.0, value: $0.1) } }
        // Read back through the new store: the same counts and digest as the backup's manifest.
        var restored = try BackupDigest.of(try kv.pinState())
        guard restored.counts == manifest.counts, restored.contentDigest == manifest.contentDigest else {
            throw Refusal(description: "the restored store reads back differently from the backup's manifest")
        }
        var replayed = 0
        if point != .backup {
            let authorities = ECDSASignature.certificatesDER(pem: Array(ca))
            replayed = try SegmentReplay(kv: kv, kek: backupKey, authorities: authorities, logger: logger).run(
                after: (manifest.appliedIndex, manifest.term), to: point, targets: segmentTargets)
            try kv.syncApplied()
            restored = try BackupDigest.of(try kv.pinState())
        }
        let position = try kv.pinState().position
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(
                index: position.index, term: position.term, configuration: Configuration(voters: [config.id])),
            data: [])
        let entry = Entry(
            term: position.term, index: position.index + 1, kind: .normal,
            data: try restoreEntry(manifest, member: config.id, position: position, kv: kv).encoded)
        try log.save(
            snapshot: snapshot, entries: [entry],
            hardState: HardState(term: position.term, vote: 0, commit: position.index + 1))
        logger.notice(
            "backup restored",
            metadata: [
                "backup": "\(manifest.backupID)", "index": "\(position.index)", "records": "\(records)",
                "data_dir": "\(config.dataDir)", "replayed_entries": "\(replayed)",
                "restored_index": "\(position.index)",
            ])
        return Report(
            manifest: manifest, records: records, replayedEntries: replayed, index: position.index,
            logTimeMillis: position.logClockMillis, counts: restored.counts, contentDigest: restored.contentDigest,
            seconds: Date().timeIntervalSince(started))
    }

    /// The command of the restore's own log entry: the `backup.restore` audit entry, naming the
    /// backup, its audit head and the index restored to, proposed by this member; and a new log
    /// lineage, archived up to the restored index (segments the cluster writes from here on are
    /// never confused with those of the cluster the backup came from).
    static func restoreEntry(
        _ manifest: BackupManifest, member: UInt64, position: ReplicatedKV.Position, kv: ReplicatedKV
    ) throws -> KVCommand {
        let entry = AuditEntry(
            action: "backup.restore", actor: "crm://member/\(member)", application: "crm://member/\(member)",
            reason:
                "backup \(manifest.backupID) of member \(manifest.member) at index \(manifest.appliedIndex); audit head \(manifest.auditHead.seq) \(manifest.auditHead.hash); restored to index \(position.index)"
        )
        let mark = ArchiveMark(archivedThrough: position.index, lineage: try SecureRandom.bytes(16))
        let transaction = Transaction(operations: [
            .put(key: ArchiveMark.key, value: mark.encoded), AuditTrail(kv: kv).append(entry),
        ])
        return KVCommand.transaction(
            session: KVCommand.noSession, sequence: 0, owner: "crm://member/\(member)",
            proposedAtMillis: max(position.logClockMillis, WallClock.nowMillis()), transaction)
    }
}

/// Replays the log segments that follow a restored backup through the state machine's apply.
struct SegmentReplay {
    let kv: ReplicatedKV
    let kek: any MasterKeyProvider
    let authorities: [[UInt8]]
    let logger: Logger

    /// Applies entries after `from` up to `point`; answers how many. Only segments of the
    /// backup's lineage (the archive mark in its state) are replayed. Refuses a chain that does
    /// not reach a requested index.
    func run(
        after from: (index: UInt64, term: UInt64), to point: BackupRestore.Point, targets: [String]
    ) throws -> Int {
        let through: UInt64
        switch point {
        case .backup: return 0
        case .index(let index):
            guard index >= from.index else {
                throw BackupRestore.Refusal(
                    description:
                        "index \(index) is before the backup's own index \(from.index): restore an older backup")
            }
            through = index
        case .time: through = .max
        }
        kv.applyThread.claim()
        let chain = SegmentChain(
            targets: targets, lineage: try ArchiveMark.read(kv).lineageText, kek: kek, authorities: authorities)
        var reached = from.index
        var replayed = 0
        if through > from.index {
            try chain.forEachSegment(after: from) { entries in
                var batch: [Entry] = []
                var done = false
                for entry in entries {
                    if entry.index > through { done = true; break }
                    if case .time(let millis) = point, LogRedaction.proposedAtMillis(entry) > millis {
                        done = true; break
                    }
                    batch.append(entry)
                }
                try apply(batch)
                replayed += batch.count
                reached = batch.last?.index ?? reached
                return !done && reached < through
            }
        }
        if case .index(let last) = point, reached < last {
            throw BackupRestore.Refusal(
                description:
                    "the log segments in \(targets) reach index \(reached), not \(last): restore to an index they reach, or find the missing segments"
            )
        }
        logger.notice("log segments replayed", metadata: ["entries": "\(replayed)", "index": "\(reached)"])
        return replayed
    }

    /// Applies in batches of bounded size; outcomes are the cluster's own (a refused command was
    /// refused there too).
    private func apply(_ entries: [Entry]) throws {
        var start = 0
        while start < entries.count {
            let end = min(entries.count, start + 1024)
            _ = try kv.apply(Array(entries[start..<end]))
            start = end
        }
    }
}
