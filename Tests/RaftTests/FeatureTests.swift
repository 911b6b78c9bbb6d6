import Testing

@testable import Raft

@Suite struct FeatureTests {
    /// ReadIndex: the leader answers once a quorum confirms it still leads; a follower's
    /// request goes through the leader; a leader cut off from the others answers nothing.
    @Test func readIndexIsAnsweredOnlyAfterAQuorumConfirmsLeadership() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.tickAll(1)
        let commit = cluster[1].commitIndex
        try cluster[1].requestRead(context: [1])
        cluster.deliverAll()
        #expect(cluster.readStates[1] == [ReadState(index: commit, context: [1])])

        try cluster[3].requestRead(context: [2])
        cluster.deliverAll()
        #expect(cluster.readStates[3] == [ReadState(index: commit, context: [2])])

        cluster.isolate(1)
        try cluster[1].requestRead(context: [3])
        cluster.deliverAll()
        #expect(cluster.readStates[1]!.count == 1)
    }

    /// Leadership transfer: the target is caught up, campaigns at once and wins; proposals are
    /// refused while the transfer is under way.
    @Test func leadershipTransferHandsOverToACaughtUpTarget() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.cut = [[1, 3]]
        _ = try cluster[1].propose([1])
        cluster.deliverAll()
        cluster.heal()
        try cluster[1].transferLeadership(to: 3)
        #expect(throws: RaftError.transferInProgress) { try cluster[1].propose([2]) }
        cluster.deliverAll()
        #expect(cluster.leaders == [3])
        #expect(cluster[1].leader == 3)
        #expect(throws: RaftError.invalidTransferTarget("node 3 already leads")) {
            try cluster[3].transferLeadership(to: 3)
        }
    }

    /// Membership: a learner receives the log without voting, is promoted once caught up, and a
    /// voter is removed; one change at a time.
    @Test func learnerCatchesUpIsPromotedAndAVoterIsRemoved() throws {
        let cluster = TestCluster(voters: [1, 2, 3], learners: [4])
        cluster.elect(1)
        _ = try cluster[1].propose([9])
        cluster.deliverAll()
        cluster.tickAll(1)
        #expect(cluster.applied[4]!.last?.data == [9])
        #expect(!cluster[1].configuration.isVoter(4))

        _ = try cluster[1].proposeChange(.promote(4))
        #expect(throws: RaftError.configurationChangePending) { _ = try cluster[1].proposeChange(.remove(3)) }
        cluster.deliverAll()
        cluster.tickAll(1)
        for id: NodeID in [1, 2, 3, 4] { #expect(cluster[id].configuration.voters == [1, 2, 3, 4], "node \(id)") }

        _ = try cluster[1].proposeChange(.remove(3))
        cluster.deliverAll()
        cluster.tickAll(1)
        #expect(cluster[1].configuration.voters == [1, 2, 4])
        #expect(throws: RaftError.invalidConfigurationChange("node 5 is not a learner; add it as a learner first")) {
            _ = try cluster[1].proposeChange(.promote(5))
        }
    }

    /// A follower behind the leader's compacted log catches up from a snapshot, then by log.
    @Test func laggingFollowerCatchesUpBySnapshot() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.isolate(3)
        for value in 0..<10 { _ = try cluster[1].propose([UInt8(value)]) }
        cluster.deliverAll()
        cluster.tickAll(1)
        let leaderStore = cluster.stores[1]!
        let compactedTo = cluster[1].appliedIndex
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(
                index: compactedTo, term: leaderStore.term(at: compactedTo)!,
                configuration: cluster[1].configuration),
            data: Array("state at \(compactedTo)".utf8))
        leaderStore.compact(to: snapshot)
        #expect(cluster[1].firstIndex == compactedTo + 1)

        cluster.heal()
        _ = try cluster[1].propose([42])
        cluster.deliverAll()
        cluster.tickAll(2)
        let follower = cluster.stores[3]!
        #expect(follower.snapshotMetadata.index == compactedTo)
        #expect(follower.snapshot().data == snapshot.data)
        #expect(cluster[3].commitIndex == cluster[1].commitIndex)
        #expect(cluster.applied[3]!.last?.data == [42])
    }
}
