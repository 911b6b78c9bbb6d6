import Engine
import Foundation
import KVStore
import Raft
import Testing

@testable import Node

/// Three members in one process on real TLS, RocksDB and the Raft loop.
@Suite(.serialized) struct RaftEngineTests {
    private func put(
        _ engine: RaftEngine, session: UInt64, sequence: UInt64, _ key: String, _ value: String
    ) async throws -> KVOutcome? {
        try await engine.propose(
            KVCommand.write(
                session: session, sequence: sequence, proposedAtMillis: 1,
                .put(key: Array(key.utf8), value: Array(value.utf8))
            ).encoded
        ).outcome
    }

    @Test func aClusterElectsReplicatesServesLinearizableReadsAndSurvivesLosingItsLeader() async throws {
        let files = try LocalClusterFiles(ids: [1, 2, 3])
        var nodes: [NodeID: NodeRuntime] = [:]
        for id: NodeID in [1, 2, 3] { nodes[id] = try await files.startNode(id) }
        #expect(await waitUntil { leader(of: nodes) != nil })
        let first = try #require(leader(of: nodes))
        let engine = try #require(first.engine)
        let opened = try await engine.propose(KVCommand.openSession(proposedAtMillis: 1).encoded)
        guard case .sessionOpened(let session)? = opened.outcome else {
            Issue.record("no session: \(String(describing: opened.outcome))")
            return
        }
        for sequence in 1...50 {
            #expect(
                try await put(engine, session: session, sequence: UInt64(sequence), "k\(sequence % 7)", "v\(sequence)")
                    == .put)
        }

        // A follower's linearizable read sees the last write.
        let follower = try #require(nodes.values.first { $0 !== first })
        try await follower.engine!.waitForLinearizableRead()
        #expect(try follower.engine!.kv.get(Array("k1".utf8)) == Array("v50".utf8))

        // Writes on a follower are refused with the leader's id.
        do {
            _ = try await put(follower.engine!, session: session, sequence: 51, "x", "y")
            Issue.record("a follower accepted a write")
        } catch let error as EngineError {
            #expect(error == .notLeader(leaderHint: first.config.id))
        }

        // The leader stops; the others elect a new one that accepts writes.
        let stoppedID = first.config.id
        await first.stop()
        nodes[stoppedID] = nil
        #expect(await waitUntil { leader(of: nodes) != nil })
        let second = try #require(leader(of: nodes))
        #expect(try await put(second.engine!, session: session, sequence: 51, "after", "failover") == .put)
        // A retry of an applied write is answered, not applied again.
        #expect(try await put(second.engine!, session: session, sequence: 51, "after", "failover-again") == .put)
        #expect(try second.engine!.kv.get(Array("after".utf8)) == Array("failover".utf8))

        // The stopped member restarts from its data and catches up.
        nodes[stoppedID] = try await files.startNode(stoppedID)
        let target = second.engine!.currentStatus.commitIndex
        #expect(await waitUntil { nodes.values.allSatisfy { ($0.engine?.currentStatus.appliedIndex ?? 0) >= target } })
        let hashes = try nodes.values.map { try $0.engine!.kv.stateHash() }
        #expect(Set(hashes.map(\.hash)).count == 1, "\(hashes)")
        for node in nodes.values { await node.stop() }
    }
}
