import Raft
import Storage
import Testing

@testable import RaftStorage

/// Three consensus members on real, sealed RocksDB logs, driven the way the node drives them:
/// persist, then send what depends on the write, then apply. Every promise that leaves a member
/// is checked against its disk at the moment it leaves.
final class DurableCluster {
    var disks: [NodeID: TestDisk] = [:]
    var logs: [NodeID: DurableLogStore] = [:]
    var nodes: [NodeID: RaftNode] = [:]
    var applied: [NodeID: [Entry]] = [:]
    var queue: [Message] = []
    /// Promises (votes, acknowledgements) checked against the disk when they left.
    var promisesChecked = 0

    init(ids: [NodeID]) throws {
        for id in ids {
            let disk = try TestDisk()
            let log = try disk.openLog()
            try log.bootstrap(founders: ids)
            disks[id] = disk
            logs[id] = log
        }
        try startAll()
    }

    /// Starts every member from what its disk holds (as after a restart of every process).
    func startAll() throws {
        for id in disks.keys.sorted() {
            let log = try disks[id]!.openLog()
            logs[id] = log
            nodes[id] = RaftNode(
                config: RaftConfig(id: id), store: log, hardState: log.hardState, random: SeededRandom(seed: id))
            applied[id] = []
        }
        queue = []
    }

    subscript(id: NodeID) -> RaftNode { nodes[id]! }

    func process(_ id: NodeID) throws {
        let node = nodes[id]!
        let ready = node.ready()
        queue += ready.messages
        try logs[id]!.save(ready)
        for message in ready.messagesAfterPersist {
            try checkOnDisk(message, from: id)
            queue.append(message)
        }
        applied[id]! += ready.committedEntries
        node.advance(ready)
    }

    /// A granted vote is on disk as the voter's vote in that term; an acknowledgement of
    /// entries up to an index has those entries on disk. Read through the engine, not the
    /// log's in-memory mirror.
    private func checkOnDisk(_ message: Message, from id: NodeID) throws {
        let engine = disks[id]!.engine!
        switch message.kind {
        case .voteResponse where !message.reject:
            let stored = try #require(
                try engine.get(.raftState, LogKeys.hardState).flatMap(RecordCoding.decodeHardState))
            #expect(
                stored.term == message.term && stored.vote == message.to, "vote of \(id) left before it was on disk")
            promisesChecked += 1
        case .appendResponse where !message.reject && message.index > logs[id]!.snapshotMetadata.index:
            let stored = try engine.get(.raftLog, LogKeys.entry(message.index)).flatMap(RecordCoding.decodeEntry)
            #expect(
                stored?.index == message.index,
                "acknowledgement of \(message.index) by \(id) left before the entry was on disk")
            promisesChecked += 1
        default:
            break
        }
    }

    func settle() throws {
        var rounds = 0
        while true {
            rounds += 1
            precondition(rounds < 100_000, "the cluster did not settle")
            if let id = nodes.keys.sorted().first(where: { nodes[$0]!.hasReady }) {
                try process(id)
            } else if !queue.isEmpty {
                let message = queue.removeFirst()
                nodes[message.to]?.step(message)
            } else {
                return
            }
        }
    }

    func elect(_ id: NodeID) throws {
        var ticks = 0
        while nodes[id]!.role != .leader {
            ticks += 1
            precondition(ticks < 200, "node \(id) was not elected")
            nodes[id]!.tick()
            try settle()
        }
    }

    func tickAll(_ count: Int) throws {
        for _ in 0..<count {
            for id in nodes.keys.sorted() { nodes[id]!.tick() }
            try settle()
        }
    }
}

@Suite struct RaftOnDurableLogTests {
    @Test func aClusterOnSealedLogsKeepsItsPromisesAcrossAFullRestart() throws {
        let cluster = try DurableCluster(ids: [1, 2, 3])
        try cluster.elect(1)
        for value in 0..<30 { _ = try cluster[1].propose(Array("write \(value)".utf8)) }
        try cluster.settle()
        try cluster.tickAll(2)
        let committedBefore = cluster[1].commitIndex
        #expect(committedBefore >= 32)
        for id: NodeID in [1, 2, 3] { #expect(cluster.applied[id]!.last?.index == committedBefore, "node \(id)") }

        // Compact the leader's log, as the node does once the state machine has applied.
        let leaderLog = cluster.logs[1]!
        let metadata = SnapshotMetadata(
            index: committedBefore - 5, term: leaderLog.term(at: committedBefore - 5)!,
            configuration: cluster[1].configuration)
        try leaderLog.compact(to: Snapshot(metadata: metadata, data: Array("state".utf8)))

        let termsAndVotes = [NodeID: HardState](uniqueKeysWithValues: [1, 2, 3].map { ($0, cluster[$0].hardState) })
        try cluster.startAll()
        for id: NodeID in [1, 2, 3] {
            #expect(cluster.logs[id]!.hardState.term == termsAndVotes[id]!.term, "node \(id) term")
            #expect(cluster.logs[id]!.hardState.vote == termsAndVotes[id]!.vote, "node \(id) vote")
            #expect(cluster.logs[id]!.hardState.commit >= committedBefore - 1, "node \(id) commit")
            #expect(cluster.logs[id]!.recovery.truncatedFrom == nil)
        }
        #expect(cluster.logs[1]!.firstIndex == metadata.index + 1)

        // The restarted cluster elects a leader again and goes on from where it was.
        try cluster.elect(2)
        _ = try cluster[2].propose(Array("after restart".utf8))
        try cluster.settle()
        try cluster.tickAll(2)
        for id: NodeID in [1, 2, 3] {
            #expect(cluster.applied[id]!.last?.data == Array("after restart".utf8), "node \(id)")
            #expect(cluster[id].commitIndex == cluster[2].commitIndex)
        }
        // Members re-apply what they had applied before the restart (from the snapshot on).
        #expect(cluster.applied[3]!.first!.index <= committedBefore)
        #expect(cluster.promisesChecked > 60)
    }
}
