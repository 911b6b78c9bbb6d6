import Foundation
import Raft
import Storage
import Testing

@testable import RaftStorage

/// The durable log on the real, sealed storage engine: what is saved is what a restart finds;
/// damage is told apart from a torn tail; bad requests write nothing.
@Suite struct DurableLogStoreTests {
    @Test func savedEntriesHardStateAndSnapshotSurviveARestart() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        #expect(log.lastIndex == 0 && log.hardState == HardState())
        try log.bootstrap(founders: [3, 1, 2])
        try log.save(
            snapshot: nil, entries: entries(2...10, term: 1), hardState: HardState(term: 2, vote: 3, commit: 7))

        log = try disk.openLog()
        #expect(log.recovery == RecoveryReport(entries: 10))
        #expect(log.hardState == HardState(term: 2, vote: 3, commit: 7))
        #expect(log.firstIndex == 1 && log.lastIndex == 10)
        #expect(log.entries(from: 1, to: 2, maxBytes: 1 << 20) == [Bootstrap.firstEntry(founders: [1, 2, 3])])
        #expect(log.entries(from: 2, to: 11, maxBytes: 1 << 20) == entries(2...10, term: 1))
        #expect(log.term(at: 0) == 0 && log.term(at: 10) == 1 && log.term(at: 11) == nil)
        #expect(throws: DurableLogError.self) { try log.bootstrap(founders: [1]) }
    }

    /// Entries, a snapshot, a new term or vote are synced; a commit index alone is not (it is
    /// learnt again from the leader), yet it is saved like the rest and a restart finds it.
    @Test func onlyACommitIndexAloneIsSavedWithoutASync() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.bootstrap(founders: [1, 2])
        try log.save(snapshot: nil, entries: entries(2...5, term: 1), hardState: HardState(term: 1, vote: 1, commit: 2))
        func mustSync(_ entries: [Entry], _ hardState: HardState?) -> Bool {
            log.mustSync(snapshot: nil, entries: entries, hardState: hardState)
        }
        #expect(!mustSync([], HardState(term: 1, vote: 1, commit: 5)))
        #expect(!mustSync([], nil))
        #expect(mustSync([], HardState(term: 2, vote: 1, commit: 5)))
        #expect(mustSync([], HardState(term: 1, vote: 2, commit: 5)))
        #expect(mustSync(entries(6...6, term: 1), nil))
        #expect(mustSync(entries(6...6, term: 1), HardState(term: 1, vote: 1, commit: 5)))

        try log.save(snapshot: nil, entries: [], hardState: HardState(term: 1, vote: 1, commit: 5))
        log = try disk.openLog()
        #expect(log.hardState == HardState(term: 1, vote: 1, commit: 5))
    }

    /// Reads honour the byte bound (at least one entry), from the cache and from disk alike.
    @Test func readsStopAtTheByteBoundFromCacheAndDisk() throws {
        let disk = try TestDisk()
        try disk.openLog().save(
            snapshot: nil, entries: entries(1...50, term: 1), hardState: HardState(term: 1, commit: 50))
        for cacheBytes in [0, 1 << 20] {
            let log = try disk.openLog(cacheBytes: cacheBytes)
            let size = entry(1, term: 1).sizeBytes
            #expect(log.entries(from: 1, to: 51, maxBytes: 3 * size).count == 3)
            #expect(log.entries(from: 5, to: 51, maxBytes: 1).map(\.index) == [5])
            #expect(log.entries(from: 40, to: 51, maxBytes: 1 << 20) == entries(40...50, term: 1))
        }
    }

    /// A new leader's entries replace a conflicting suffix, on disk as in memory.
    @Test func conflictingSuffixIsReplacedOnDisk() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.save(snapshot: nil, entries: entries(1...10, term: 1), hardState: HardState(term: 1, commit: 4))
        try log.save(
            snapshot: nil, entries: [entry(6, term: 2, "new 6"), entry(7, term: 2, "new 7")],
            hardState: HardState(term: 2, commit: 4))
        #expect(log.lastIndex == 7 && log.term(at: 6) == 2)
        log = try disk.openLog()
        #expect(log.lastIndex == 7)
        #expect(
            log.entries(from: 5, to: 8, maxBytes: 1 << 20) == [
                entry(5, term: 1), entry(6, term: 2, "new 6"), entry(7, term: 2, "new 7"),
            ])
        #expect(try disk.rawEntry(8) == nil)
    }

    @Test func compactionKeepsTheTailAndSurvivesARestart() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.save(snapshot: nil, entries: entries(1...20, term: 3), hardState: HardState(term: 3, commit: 15))
        let metadata = SnapshotMetadata(
            index: 12, term: 3, configuration: Configuration(voters: [1, 2, 3], learners: [4]))
        try log.compact(to: Snapshot(metadata: metadata, data: Array("state at 12".utf8)))
        #expect(log.firstIndex == 13 && log.term(at: 12) == 3 && log.term(at: 11) == nil)
        #expect(throws: DurableLogError.self) {
            try log.compact(
                to: Snapshot(
                    metadata: SnapshotMetadata(index: 18, term: 3, configuration: metadata.configuration), data: []))
        }

        log = try disk.openLog()
        #expect(log.snapshotMetadata == metadata)
        #expect(log.snapshot().data == Array("state at 12".utf8))
        #expect(log.firstIndex == 13 && log.lastIndex == 20)
        #expect(log.entries(from: 13, to: 21, maxBytes: 1 << 20) == entries(13...20, term: 3))
        #expect(try disk.rawEntry(12) == nil)
    }

    /// Entries kept for the log archiver: below the snapshot, outside the Raft log, readable by
    /// `retainedEntries` across a restart, released by the next compaction's mark and removed
    /// whole by a snapshot from the leader.
    @Test func compactionRetainsEntriesForTheArchiverUntilReleased() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        let configuration = Configuration(voters: [1, 2, 3])
        try log.save(snapshot: nil, entries: entries(1...30, term: 2), hardState: HardState(term: 2, commit: 30))
        try log.compact(
            to: Snapshot(metadata: SnapshotMetadata(index: 12, term: 2, configuration: configuration), data: []),
            retainingFrom: 5)
        #expect(log.firstIndex == 13 && log.retainedFrom == 5 && log.term(at: 8) == nil)
        #expect(try log.retainedEntries(from: 5, through: 20, maxBytes: 1 << 20) == entries(5...20, term: 2))
        #expect(try disk.rawEntry(4) == nil)

        log = try disk.openLog()
        #expect(log.retainedFrom == 5 && log.firstIndex == 13)
        #expect(try log.retainedEntries(from: 5, through: 6, maxBytes: 1 << 20) == entries(5...6, term: 2))
        #expect(throws: DurableLogError.self) { try log.retainedEntries(from: 4, through: 6, maxBytes: 1 << 20) }

        // A later compaction never brings released entries back, and may release more.
        try log.compact(
            to: Snapshot(metadata: SnapshotMetadata(index: 20, term: 2, configuration: configuration), data: []),
            retainingFrom: 2)
        #expect(log.retainedFrom == 5)
        try log.compact(
            to: Snapshot(metadata: SnapshotMetadata(index: 25, term: 2, configuration: configuration), data: []),
            retainingFrom: 18)
        #expect(log.retainedFrom == 18)
        #expect(try disk.rawEntry(17) == nil)
        #expect(try disk.rawEntry(18) != nil)

        let leaders = Snapshot(
            metadata: SnapshotMetadata(index: 40, term: 3, configuration: configuration), data: Array("forty".utf8))
        try log.save(snapshot: leaders, entries: [], hardState: HardState(term: 3, commit: 40))
        #expect(log.retainedFrom == 41)
        #expect(try disk.rawEntry(18) == nil)
        log = try disk.openLog()
        #expect(log.retainedFrom == 41 && log.firstIndex == 41)
    }

    /// A snapshot from the leader: the log is replaced, or kept after the snapshot when it
    /// agrees with it. Data larger than a chunk is stored in several and read back whole.
    @Test func snapshotFromTheLeaderReplacesOrKeepsTheLog() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.save(snapshot: nil, entries: entries(1...10, term: 2), hardState: HardState(term: 2, commit: 3))
        let big = (0..<(DurableLogStore.snapshotChunkBytes * 2 + 1234)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let agreeing = Snapshot(
            metadata: SnapshotMetadata(index: 6, term: 2, configuration: Configuration(voters: [1, 2, 3])), data: big)
        try log.save(snapshot: agreeing, entries: [], hardState: HardState(term: 2, commit: 6))
        #expect(log.firstIndex == 7 && log.lastIndex == 10)

        let newer = Snapshot(
            metadata: SnapshotMetadata(index: 30, term: 5, configuration: Configuration(voters: [1, 2])),
            data: Array("thirty".utf8))
        try log.save(snapshot: newer, entries: [entry(31, term: 5)], hardState: HardState(term: 5, commit: 30))
        log = try disk.openLog()
        #expect(log.snapshotMetadata == newer.metadata && log.snapshot().data == newer.data)
        #expect(log.firstIndex == 31 && log.lastIndex == 31 && log.hardState.commit == 30)
        #expect(try disk.rawEntry(10) == nil)

        let reopenedAgreeing = try TestDisk()
        var second = try reopenedAgreeing.openLog()
        try second.save(snapshot: agreeing, entries: [], hardState: HardState(term: 2, commit: 6))
        second = try reopenedAgreeing.openLog()
        #expect(second.snapshot().data == big)
        #expect(throws: DurableLogError.self) { try second.save(snapshot: agreeing, entries: [], hardState: nil) }
    }

    /// Damage above the commit index is a torn or lost tail: cut off, reported, and the rest
    /// served. A gap is treated the same way.
    @Test func damagedOrMissingTailAboveTheCommitIsTruncated() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.save(snapshot: nil, entries: entries(1...10, term: 1), hardState: HardState(term: 1, commit: 6))
        try disk.damageEntry(9)
        log = try disk.openLog()
        #expect(log.recovery.truncatedFrom == 9)
        #expect(log.recovery.truncationReason?.contains("fails verification") == true)
        #expect(log.lastIndex == 8 && log.entries(from: 7, to: 9, maxBytes: 1 << 20) == entries(7...8, term: 1))
        #expect(try disk.rawEntry(9) == nil && disk.rawEntry(10) == nil)

        try disk.deleteRawEntry(7)
        log = try disk.openLog()
        #expect(log.recovery.truncatedFrom == 7 && log.lastIndex == 6)
        #expect(log.recovery.truncationReason == "entry 7 is missing (the next stored entry is 8)")
        log = try disk.openLog()
        #expect(log.recovery == RecoveryReport(entries: 6))
    }

    /// Damage at or below the commit index is lost committed data: the log refuses to open and
    /// says which entry and what to do.
    @Test func damagedCommittedEntryRefusesToOpen() throws {
        let disk = try TestDisk()
        try disk.openLog().save(
            snapshot: nil, entries: entries(1...10, term: 1), hardState: HardState(term: 1, commit: 6))
        try disk.damageEntry(6)
        do {
            _ = try disk.openLog()
            Issue.record("opened a log whose committed entry 6 is damaged")
        } catch DurableLogError.damagedCommittedEntry(let index, let reason) {
            #expect(index == 6)
            #expect(reason.contains("fails verification"))
            #expect(
                DurableLogError.damagedCommittedEntry(index: index, reason: reason).description.contains(
                    "re-add it as a learner"))
        }
    }

    /// An entry's sealed bytes moved to another index do not open there (the seal binds the
    /// key): a swapped block is damage, never a valid entry.
    @Test func entriesAreSealedAndBoundToTheirIndex() throws {
        let disk = try TestDisk()
        let secret = "customer: Ada Lovelace, +44 20 7946 0000"
        try disk.openLog().save(
            snapshot: nil, entries: [entry(1, term: 1), entry(2, term: 1, secret), entry(3, term: 1)],
            hardState: HardState(term: 1, commit: 1))
        let raw = try #require(try disk.rawEntry(2))
        #expect(!String(decoding: raw, as: UTF8.self).contains("Lovelace"))
        try disk.writeRawEntry(3, raw)
        let log = try disk.openLog()
        #expect(log.recovery.truncatedFrom == 3)
        #expect(log.recovery.truncationReason?.contains("moved or swapped") == true)
    }

    @Test func damagedHardStateRefusesToOpen() throws {
        let disk = try TestDisk()
        try disk.openLog().save(
            snapshot: nil, entries: entries(1...3, term: 1), hardState: HardState(term: 4, vote: 2, commit: 1))
        var raw = try #require(try disk.rawValue(.raftState, LogKeys.hardState))
        raw[raw.count - 3] ^= 1
        try disk.writeRaw(.raftState, LogKeys.hardState, raw)
        #expect {
            _ = try disk.openLog()
        } throws: { error in
            guard case DurableLogError.damagedHardState = error else { return false }
            return true
        }
    }

    /// Requests that do not fit the log are refused before anything is written.
    @Test func invalidRequestsWriteNothing() throws {
        let disk = try TestDisk()
        var log = try disk.openLog()
        try log.save(snapshot: nil, entries: entries(1...5, term: 2), hardState: HardState(term: 2, commit: 2))
        let refused: [(Snapshot?, [Entry], HardState?)] = [
            (nil, [entry(8, term: 2)], nil), // a gap
            (nil, [entry(6, term: 1)], nil), // a lower term
            (nil, [entry(6, term: 2), entry(8, term: 2)], nil), // not consecutive
            (nil, [], HardState(term: 2, commit: 9)), // commit beyond the log
        ]
        for (snapshot, new, hardState) in refused {
            #expect(throws: DurableLogError.self) {
                try log.save(snapshot: snapshot, entries: new, hardState: hardState)
            }
        }
        log = try disk.openLog()
        #expect(log.lastIndex == 5 && log.hardState == HardState(term: 2, commit: 2))
    }
}
