import Testing

@testable import Raft

@Suite struct ElectionTests {
    @Test func singleVoterElectsItselfAndCommitsAtOnce() throws {
        let cluster = TestCluster(voters: [1])
        cluster.elect(1)
        #expect(cluster[1].role == .leader)
        #expect(cluster[1].term == 1)
        let outcome = try cluster[1].propose([42])
        #expect(outcome == .appended(index: 2, term: 1))
        cluster.settleReadies()
        #expect(cluster[1].commitIndex == 2)
        #expect(cluster.applied[1]!.map(\.data) == [[], [42]])
    }

    @Test func threeVotersElectExactlyOneLeaderAndReplicate() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        #expect(cluster.leaders == [1])
        for id: NodeID in [2, 3] {
            #expect(cluster[id].leader == 1)
            #expect(cluster[id].term == cluster[1].term)
        }
        _ = try cluster[1].propose([7])
        cluster.deliverAll()
        cluster.tickAll(1) // a heartbeat carries the new commit index to the followers
        for id: NodeID in [1, 2, 3] {
            #expect(cluster.applied[id]!.last?.data == [7])
            #expect(cluster[id].commitIndex == 2)
        }
    }

    /// §5.4.1: a voter refuses a candidate whose log is less up to date than its own.
    @Test func candidateWithAShorterLogCannotWin() {
        let cluster = TestCluster(
            voters: [1, 2, 3], logs: [1: entries([1, 2]), 2: entries([1, 2]), 3: entries([1])], term: 2)
        cluster.elect(3)
        #expect(cluster[3].role != .leader)
        #expect(cluster.leaders.isEmpty)
        cluster.elect(1)
        #expect(cluster.leaders == [1])
    }

    /// Pre-vote: a node cut off from the others campaigns in vain without raising the term, so
    /// when it returns it does not depose the working leader.
    @Test func isolatedNodeDoesNotRaiseTheTermOrDeposeTheLeader() {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        let term = cluster[1].term
        cluster.isolate(3)
        for _ in 0..<50 { cluster[3].tick(); cluster.deliverAll() }
        #expect(cluster[3].term == term)
        cluster.heal()
        cluster.tickAll(3)
        #expect(cluster.leaders == [1])
        #expect(cluster[1].term == term)
    }

    /// Check-quorum: a leader that hears from no quorum for an election timeout steps down.
    @Test func leaderWithoutAQuorumStepsDown() {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.isolate(1)
        for _ in 0..<(2 * cluster[1].config.electionTicks) {
            cluster[1].tick()
            cluster.deliverAll()
        }
        #expect(cluster[1].role == .follower)
    }

    /// Votes and the term are persisted before any message that depends on them leaves.
    @Test func votesLeaveOnlyAfterTheyArePersisted() {
        let cluster = TestCluster(voters: [1, 2, 3]) { $0.preVote = false }
        while cluster[1].role == .follower { cluster[1].tick() }
        let campaign = cluster[1].ready()
        #expect(campaign.hardState?.term == 1 && campaign.hardState?.vote == 1)
        #expect(campaign.messages.isEmpty)
        #expect(campaign.messagesAfterPersist.map(\.kind) == [.vote, .vote])
        cluster[1].advance(campaign)
        cluster[2].step(campaign.messagesAfterPersist[0])
        let grant = cluster[2].ready()
        #expect(grant.hardState?.vote == 1)
        #expect(grant.messages.isEmpty)
        #expect(grant.messagesAfterPersist.map(\.kind) == [.voteResponse])
        #expect(grant.messagesAfterPersist.first?.reject == false)
    }
}
