import Backup
import Foundation
import KVStore
import Logging
import Raft
import Storage
import Testing

@testable import Node

/// The leader's backup schedule: due with no backup or one `every` old; retention removes
/// backups past `keep` but never a target's newest; BACKUP_STALE only while leading, after two
/// intervals without a backup counted from the newest or from when leading began.
@Suite struct BackupScheduleTests {
    let hour: UInt64 = 3_600_000

    @Test func aBackupIsDueWhenNoneOrTheNewestIsAnIntervalOld() {
        let schedule = BackupSchedule(everyMillis: 6 * hour, keepMillis: 35 * 24 * hour)
        #expect(schedule.isDue(newest: nil, now: 1))
        #expect(!schedule.isDue(newest: 10 * hour, now: 15 * hour))
        #expect(schedule.isDue(newest: 10 * hour, now: 16 * hour))
        #expect(!BackupSchedule(everyMillis: 0, keepMillis: hour).isDue(newest: nil, now: 1), "no schedule")
    }

    @Test func retentionNeverRemovesATargetsNewest() throws {
        let schedule = BackupSchedule(everyMillis: 6 * hour, keepMillis: 24 * hour)
        func listed(_ created: UInt64) throws -> BackupStore.Listed {
            var manifest = try BackupManifestStub.make()
            manifest.createdAtMillis = created
            return BackupStore.Listed(id: try BackupID.random(), target: "/t", manifest: manifest, bytes: 1)
        }
        let old = try listed(1 * hour)
        let older = try listed(0)
        let recent = try listed(40 * hour)
        #expect(Set(schedule.expired([old, recent, older], now: 50 * hour).map(\.id)) == [old.id, older.id])
        #expect(schedule.expired([old], now: 500 * hour).isEmpty, "the only backup stays")
    }

    @Test func backupStaleOnlyWhileLeadingAfterTwoIntervals() {
        let status = BackupStatus(everyMillis: 6 * hour)
        #expect(status.staleness(now: 100 * hour) == nil, "a follower")
        status.leading(true, now: 10 * hour)
        #expect(status.staleness(now: 21 * hour) == nil)
        #expect(status.staleness(now: 23 * hour)?.contains("no backup") == true)
        status.succeeded(at: 22 * hour, index: 1)
        #expect(status.staleness(now: 33 * hour) == nil)
        #expect(status.staleness(now: 35 * hour)?.contains("the newest backup is 13.0 h old") == true)
        status.leading(false, now: 35 * hour)
        #expect(status.staleness(now: 100 * hour) == nil)
        #expect(BackupStatus(everyMillis: 0).staleness(now: 100 * hour) == nil, "no schedule")
    }

    @Test func backupStaleAfterEightDaysWithoutAPassedDrill() {
        let day = 24 * hour
        let status = BackupStatus(everyMillis: 6 * hour)
        status.leading(true, now: 0)
        for backup in stride(from: UInt64(0), through: 20 * day, by: 6 * Int(hour)) {
            status.succeeded(at: backup, index: backup)
        }
        #expect(status.staleness(now: 8 * day) == nil)
        #expect(
            status.staleness(now: 8 * day + hour)?.contains("no restore drill has passed in 8.0 days of leading")
                == true)
        status.drilled(at: 8 * day + 2 * hour)
        #expect(status.staleness(now: 16 * day) == nil)
        #expect(status.staleness(now: 16 * day + 3 * hour)?.contains("the last restore drill passed") == true)
    }
}

/// A manifest as a backup's `manifest.json` would give it (its times set by each test).
enum BackupManifestStub {
    static func make() throws -> BackupManifest {
        let json = """
            {"format": 1, "backup_id": "00000000000000000000000000000000", "member": 1, "applied_index": 1,
             "term": 1, "log_time_ms": 1, "created_at_ms": 1, "binary_version": "test", "key_set_version": 1,
             "audit_head": {"seq": 0, "hash": ""}, "audit_base": {"seq": 0, "hash": ""}, "counts": {},
             "content_digest": "", "data": [], "keys": [], "wrapped_key": "", "key_provider": "test"}
            """
        return try JSONDecoder().decode(BackupManifest.self, from: Data(json.utf8))
    }
}

/// What a compaction keeps for the log archiver: nothing before the first archive mark; the
/// entries after the mark; at most `max_archive_lag_entries` of them, past which the gap raises
/// BACKUP_GAP until a full backup covers it.
@Suite struct ArchiveRetentionTests {
    func retention(mark: UInt64?, maxLag: UInt64 = 1000) throws -> (ArchiveRetention, BackupStatus) {
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        kv.applyThread.claim()
        if let mark {
            let put = Transaction(operations: [
                .put(key: ArchiveMark.key, value: ArchiveMark(archivedThrough: mark, lineage: []).encoded)
            ])
            let command = KVCommand.transaction(
                session: 0, sequence: 0, owner: "crm://member/1", proposedAtMillis: 1, put)
            _ = try kv.apply([Entry(term: 1, index: 1, data: command.encoded)])
        }
        let status = BackupStatus(everyMillis: 0)
        let retention = ArchiveRetention(
            kv: kv, maxLagEntries: maxLag, status: status, logger: Logger(label: "test.archive"))
        return (retention, status)
    }

    @Test func compactionKeepsWhatTheArchiverHasNotWrittenUpToTheBound() throws {
        #expect(try retention(mark: nil).0.keepFrom(compactingTo: 5000) == 5001)
        let (behind, status) = try retention(mark: 4500)
        #expect(behind.keepFrom(compactingTo: 5000) == 4501)
        #expect(status.archiveGap() == nil)
        // Already archived past the compaction point: nothing kept.
        #expect(try retention(mark: 6000).0.keepFrom(compactingTo: 5000) == 5001)

        let (far, gapped) = try retention(mark: 1000, maxLag: 1000)
        #expect(far.keepFrom(compactingTo: 5000) == 4001)
        #expect(gapped.archiveGap()?.contains("entries 1001...4000 were compacted before they were archived") == true)
        gapped.succeeded(at: 1, index: 3999)
        #expect(gapped.archiveGap() != nil, "a backup before the gap's end does not close it")
        gapped.succeeded(at: 2, index: 4000)
        #expect(gapped.archiveGap() == nil)
    }
}
