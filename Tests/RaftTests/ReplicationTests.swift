import Testing

@testable import Raft

@Suite struct ReplicationTests {
    /// Figure 8 of the Raft paper: a leader never commits an entry of an older term by counting
    /// the replicas that have it; only an entry of its own term commits (and the older with it).
    @Test func leaderDoesNotCommitAnOldTermEntryByCountingReplicas() {
        let cluster = TestCluster(
            voters: [1, 2, 3], logs: [1: entries([1, 2]), 2: entries([1]), 3: entries([1])], term: 2)
        // Node 1 wins term 3; every append it sends is held back.
        while cluster[1].role == .follower { cluster[1].tick() }
        cluster.deliverAll { $0.kind != .append }
        #expect(cluster[1].role == .leader)
        let term = cluster[1].term
        #expect(cluster[1].lastIndex == 3)
        #expect(cluster[1].commitIndex == 0)
        // Node 2 reports (late) that it now has index 2, the term-2 entry: a majority has it.
        var late = Message(kind: .appendResponse, from: 2, to: 1, term: term)
        late.index = 2
        cluster[1].step(late)
        cluster.settleReadies()
        #expect(cluster[1].commitIndex < 2)
        // Once node 2 has the leader's own term-3 entry at index 3, both commit.
        var current = Message(kind: .appendResponse, from: 2, to: 1, term: term)
        current.index = 3
        cluster[1].step(current)
        cluster.settleReadies()
        #expect(cluster[1].commitIndex == 3)
    }

    /// Figure 7: followers missing entries, or holding extra entries of other terms, end up with
    /// exactly the leader's log; conflicting uncommitted entries are overwritten.
    @Test func followerLogsAreRepairedToTheLeaders() throws {
        let leaderLog = entries([1, 1, 1, 4, 4, 5, 5, 6, 6, 6])
        let cluster = TestCluster(
            voters: [1, 2, 3, 4, 5],
            logs: [
                1: leaderLog,
                2: entries([1, 1, 1, 4, 4, 5, 5, 6, 6]), // missing one
                3: entries([1, 1, 1, 4]), // missing many
                4: entries([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]), // one extra, uncommitted
                5: entries([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]), // other terms after index 3
            ],
            term: 6)
        cluster.elect(1)
        #expect(cluster.leaders == [1])
        _ = try cluster[1].propose([99])
        cluster.deliverAll()
        cluster.tickAll(2)
        let expected = cluster.stores[1]!.entries(from: 1, to: cluster.stores[1]!.lastIndex + 1, maxBytes: .max)
        #expect(expected.count == 12)
        for id: NodeID in [2, 3, 4, 5] {
            let store = cluster.stores[id]!
            #expect(store.entries(from: 1, to: store.lastIndex + 1, maxBytes: .max) == expected, "node \(id)")
            #expect(cluster[id].commitIndex == 12)
        }
    }

    /// A follower's acknowledgement of entries leaves only after they are persisted, while the
    /// leader's appends may go out before its own write (it counts itself only once persisted).
    @Test func acknowledgementsWaitForPersistenceAndTheLeaderCountsItselfOnlyWhenPersisted() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        _ = try cluster[1].propose([5])
        let leaderReady = cluster[1].ready()
        #expect(leaderReady.entries.count == 1)
        #expect(leaderReady.messages.map(\.kind) == [.append, .append])
        // Both followers acknowledge, yet without its own persisted copy the leader has 2 of 3...
        let index = leaderReady.entries[0].index
        for message in leaderReady.messages {
            cluster[message.to].step(message)
            let followerReady = cluster[message.to].ready()
            #expect(followerReady.messages.isEmpty)
            #expect(followerReady.messagesAfterPersist.map(\.kind) == [.appendResponse])
            cluster.stores[message.to]!.append(followerReady.entries)
            cluster[message.to].advance(followerReady)
            cluster[1].step(followerReady.messagesAfterPersist[0])
        }
        // ...which is a quorum here even without the leader; the leader's own count comes with advance.
        #expect(cluster[1].commitIndex == index)
        cluster.stores[1]!.append(leaderReady.entries)
        cluster[1].advance(leaderReady)
        #expect(cluster[1].matchIndexes[1] == index)
    }

    @Test func followersForwardProposalsOrRefuseWithALeaderHint() throws {
        let forwarding = TestCluster(voters: [1, 2, 3])
        forwarding.elect(1)
        #expect(try forwarding[2].propose([1]) == .forwarded(to: 1))
        forwarding.deliverAll()
        forwarding.tickAll(1)
        #expect(forwarding.applied[3]!.last?.data == [1])

        let refusing = TestCluster(voters: [1, 2, 3]) { $0.forwardProposals = false }
        refusing.elect(1)
        #expect(throws: RaftError.notLeader(leaderHint: 1)) { try refusing[2].propose([1]) }
    }

    @Test func uncommittedLogGrowthIsBounded() throws {
        let cluster = TestCluster(voters: [1, 2, 3]) { $0.maxUncommittedBytes = 1000 }
        cluster.elect(1)
        cluster.isolate(1)
        var accepted = 0
        var refused = false
        for _ in 0..<100 {
            do {
                _ = try cluster[1].propose([UInt8](repeating: 1, count: 100))
                accepted += 1
            } catch {
                #expect(error == .tooManyUncommittedBytes)
                refused = true
                break
            }
        }
        #expect(refused)
        #expect(accepted >= 7 && accepted <= 10)
    }
}
