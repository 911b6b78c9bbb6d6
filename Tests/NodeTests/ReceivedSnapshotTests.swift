import Engine
import Foundation
import KVStore
import Logging
import Raft
import RaftStorage
import Sealing
import Storage
import Testing
import Wire

@testable import Node
@testable import Transport

/// A member that crashed after its log recorded a snapshot from the leader, and before the
/// state machine had it all: at the next start the member restores it from the snapshot
/// spool (the log keeps only metadata), then drops the file.
@Suite struct ReceivedSnapshotTests {
    @Test func aSnapshotTheLogRecordedIsRestoredFromTheSpoolAtStart() throws {
        let leader = try MemberDisk()
        let leaderKV = try leader.kv()
        var entries = [Entry(term: 2, index: 1, data: KVCommand.openSession(proposedAtMillis: 1).encoded)]
        for sequence in 1...200 {
            let write = KVCommand.write(
                session: 1, sequence: UInt64(sequence), proposedAtMillis: 5,
                .put(key: Array("key\(sequence)".utf8), value: [UInt8](repeating: UInt8(sequence % 251), count: 3000)))
            entries.append(Entry(term: 2, index: UInt64(sequence + 1), data: write.encoded))
        }
        _ = try leaderKV.apply(entries)
        let pinned = try leaderKV.pinState()
        let expected = try leaderKV.stateHash()
        let metadata = SnapshotMetadata(index: 201, term: 2, configuration: Configuration(voters: [1, 2, 3]))

        // What the transport did when the snapshot arrived, and what the log then recorded.
        let follower = try MemberDisk()
        let spool = try SnapshotSpool(directory: follower.path + "/snapshots")
        let file = try spool.begin(index: 201, term: 2)
        let reader = try pinned.openReader()
        var checksum: UInt32 = 0
        while let piece = try reader.read(maxBytes: 4096) {
            try file.append(piece)
            checksum = CRC32C.checksum(piece, continuing: checksum)
        }
        let received = try file.finish(checksum: checksum)
        try received.makeDurable()
        let log = try follower.log()
        try log.save(
            snapshot: Snapshot(metadata: metadata, data: [], source: received), entries: [],
            hardState: HardState(term: 2, vote: 0, commit: 201))
        #expect(log.snapshot().hasData == false)

        let followerKV = try follower.kv()
        #expect(followerKV.appliedIndex == 0)
        _ = try follower.loop(log: log, kv: followerKV, received: SpooledSnapshots(spool))
        #expect(followerKV.appliedIndex == 201)
        #expect(try followerKV.stateHash() == expected)
        #expect(try spool.received(index: 201, term: 2) == nil)

        // Without the file there is nothing to restore from: the start fails, saying so.
        let other = try MemberDisk()
        let otherLog = try other.log()
        try otherLog.save(
            snapshot: Snapshot(metadata: metadata, data: [], source: received), entries: [],
            hardState: HardState(term: 2, vote: 0, commit: 201))
        let otherSpool = try SnapshotSpool(directory: other.path + "/snapshots")
        #expect(throws: EngineError.self) {
            _ = try other.loop(log: otherLog, kv: try other.kv(), received: SpooledSnapshots(otherSpool))
        }
    }

    /// A spooled file damaged after it arrived fails its checksum when read back: the restore
    /// stops before it writes the applied position.
    @Test func aDamagedSpoolFileIsNotRestored() throws {
        let disk = try MemberDisk()
        let spool = try SnapshotSpool(directory: disk.path + "/snapshots")
        let file = try spool.begin(index: 9, term: 1)
        let data = [UInt8](repeating: 7, count: 10_000)
        try file.append(data)
        _ = try file.finish(checksum: CRC32C.checksum(data))
        let path = spool.directory + "/snapshot-9-1"
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: 5000)
        handle.write(Data([8]))
        try handle.close()
        let reopened = try #require(try spool.received(index: 9, term: 1))
        let reader = try reopened.openReader()
        #expect(throws: SpoolError.self) { while try reader.read(maxBytes: 4096) != nil {} }
    }
}

/// A member's storage, log and state machine in a temporary directory.
private final class MemberDisk {
    let path = NSTemporaryDirectory() + "crm-member-" + UUID().uuidString
    let masterKey: FileMasterKeyProvider
    private var engine: StorageEngine?
    let logger: Logger = {
        var logger = Logger(label: "test.member")
        logger.logLevel = .critical
        return logger
    }()

    init() throws {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        masterKey = try FileMasterKeyProvider.generateKeyFile(at: path + "/master.key")
    }

    deinit {
        engine?.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    private func storage() throws -> StorageEngine {
        if let engine { return engine }
        let opened = try StorageEngine.open(path: path + "/db", masterKey: masterKey, options: .compact, logger: logger)
        engine = opened
        return opened
    }

    func kv() throws -> ReplicatedKV { try ReplicatedKV(storage: try storage(), logger: logger) }
    func log() throws -> DurableLogStore { try DurableLogStore.open(engine: try storage(), logger: logger) }

    func loop(log: DurableLogStore, kv: ReplicatedKV, received: any ReceivedSnapshots) throws -> MemberLoop {
        try MemberLoop(
            config: RaftConfig(id: 2), log: DurableLogWriter(log: log, metrics: NodeMetrics()), kv: kv,
            outbox: NoOutbox(), clock: SystemMonotonicClock(), random: SeededRandom(seed: 7), received: received,
            logger: logger)
    }
}

private final class NoOutbox: Outbox {
    func send(_ messages: [Message]) throws -> [NodeID] { [] }
}
