import Backup
import Foundation
import KVStore
import Logging
import Raft

/// The leader's log archiver, for point-in-time recovery: committed entries after the archive
/// mark (the replicated `ArchiveMark`) are written as a sealed log segment into every backup
/// target each `backup.archive_seconds` (sooner at 64 MiB), and the mark then moves past them
/// through the log, so that whichever member leads next goes on from there. Until the mark
/// passes them, every member's compaction keeps the entries (`ArchiveRetention`).
///
/// With nothing archived yet, it starts after the newest full backup its log still reaches; when
/// its log no longer holds the entries after the mark (the archiver fell too far behind, or this
/// member was repaired by a snapshot), that is a gap: BACKUP_GAP is raised, a full backup taken,
/// and the chain goes on from it.
///
/// Run by one periodic job: never two steps at once.
final class LogArchiver: @unchecked Sendable {
    let engine: RaftEngine
    let crm: CRMRecords
    let admin: AdminService
    let intervalMillis: UInt64
    let logger: Logger
    /// When this member last closed a segment (0: not since it began to lead).
    private var lastClosedMillis: UInt64 = 0

    init(engine: RaftEngine, crm: CRMRecords, admin: AdminService, intervalMillis: UInt64, logger: Logger) {
        precondition(intervalMillis > 0, "an archiver without an interval")
        self.engine = engine
        self.crm = crm
        self.admin = admin
        self.intervalMillis = intervalMillis
        self.logger = logger
    }

    /// One step on the leader (on any other member it only forgets its interval).
    func step(leads: Bool, now: UInt64) async {
        guard leads else {
            lastClosedMillis = 0
            return
        }
        guard now >= lastClosedMillis &+ intervalMillis else { return }
        do {
            if try await archive(now: now) { lastClosedMillis = now }
        } catch {
            logger.warning("log archiving failed; trying again shortly", metadata: ["error": "\(error)"])
        }
    }

    /// Writes the next segment if there are entries to archive; true when one was written.
    private func archive(now: UInt64) async throws -> Bool {
        let settings = try admin.backupSettings()
        let mark = try ArchiveMark.read(engine.kv)
        let newestBackup = settings.targets.flatMap { BackupStore.list($0).backups }.compactMap(\.manifest)
            .map(\.appliedIndex).max()
        var from: UInt64
        if mark.archivedThrough > 0 {
            from = mark.archivedThrough + 1
        } else {
            // Segments carry a full backup forward: none before the first backup.
            guard let newestBackup else { return false }
            from = newestBackup + 1
        }
        var read: ArchiveRead
        do {
            read = try await engine.readArchive(from: from, maxBytes: LogSegments.maxSegmentBytes)
        } catch {
            // The entries after the mark left this member's log: go on from a newer full backup.
            guard let newestBackup, newestBackup + 1 > from else {
                admin.backupStatus.gap(
                    through: engine.kv.appliedIndex,
                    reason:
                        "entries from \(from) are no longer in the leader's log (\(error)); point-in-time recovery restarts at the next full backup, which is being taken"
                )
                _ = try await admin.takeBackup(by: Caller(identity: .member(engine.id)))
                return false
            }
            from = newestBackup + 1
            read = try await engine.readArchive(from: from, maxBytes: LogSegments.maxSegmentBytes)
        }
        guard let last = read.entries.last else { return false }
        let origin = BackupWriter.Origin(
            member: engine.id, binaryVersion: NodeVersion.current, createdAtMillis: now)
        let writer = LogSegmentWriter(kek: settings.kek, signer: settings.signer)
        let (entries, previousTerm, lineage) = (read.entries, read.previousTerm, mark.lineageText)
        _ = try await admin.offload {
            for target in settings.targets {
                _ = try writer.write(
                    entries, previousTerm: previousTerm, lineage: lineage, origin: origin, into: target)
            }
        }
        try await Self.move(
            ArchiveMark(archivedThrough: last.index, lineage: mark.lineage), crm: crm, member: engine.id)
        logger.info(
            "log segment archived",
            metadata: ["first_index": "\(from)", "last_index": "\(last.index)", "entries": "\(entries.count)"])
        return true
    }
}

extension LogArchiver {
    /// Proposes the archive mark.
    static func move(_ mark: ArchiveMark, crm: CRMRecords, member: UInt64) async throws {
        _ = try await crm.propose(
            Transaction(operations: [.put(key: ArchiveMark.key, value: mark.encoded)]),
            caller: Caller(identity: .member(member)), audit: nil)
    }

    /// After a full backup with nothing archived yet: the chain starts at the backup's index,
    /// so that whichever member leads next archives from there (its own targets may hold no
    /// backup).
    static func startChain(at index: UInt64, crm: CRMRecords, kv: ReplicatedKV, member: UInt64) async throws {
        let mark = try ArchiveMark.read(kv)
        guard mark.archivedThrough == 0 else { return }
        try await move(ArchiveMark(archivedThrough: index, lineage: mark.lineage), crm: crm, member: member)
    }
}

/// Which entries a member's compaction keeps for the archiver: those after the replicated
/// archive mark, up to `maxLagEntries` before the compaction point; older ones are compacted
/// anyway, and the gap raises BACKUP_GAP until a full backup covers it. Nothing is kept before
/// the first mark (the chain starts at a full backup).
struct ArchiveRetention: Sendable {
    let kv: ReplicatedKV
    let maxLagEntries: UInt64
    let status: BackupStatus
    let logger: Logger

    func keepFrom(compactingTo index: UInt64) -> UInt64 {
        let mark: ArchiveMark
        do {
            mark = try ArchiveMark.read(kv)
        } catch {
            logger.error(
                "the archive mark cannot be read; compacting without keeping entries", metadata: ["error": "\(error)"])
            return index + 1
        }
        guard mark.archivedThrough > 0, mark.archivedThrough < index else { return index + 1 }
        let floor = index + 1 > maxLagEntries ? index + 1 - maxLagEntries : 1
        guard mark.archivedThrough + 1 >= floor else {
            status.gap(
                through: floor - 1,
                reason:
                    "entries \(mark.archivedThrough + 1)...\(floor - 1) were compacted before they were archived (backup.max_archive_lag_entries \(maxLagEntries)); point-in-time recovery restarts at the next full backup"
            )
            return floor
        }
        return mark.archivedThrough + 1
    }
}
