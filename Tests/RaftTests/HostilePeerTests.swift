import Testing

@testable import Raft

/// Messages no honest member sends, driven straight into the core (security review F1–F3,
/// F13): each is refused with a reason, nothing traps, and the cluster goes on as before.
@Suite struct HostilePeerTests {
    /// A 3-voter cluster with member 1 leading and one entry committed in its term.
    private func leading() throws -> TestCluster {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        try #require(cluster.leaders == [1])
        _ = try cluster[1].propose([1])
        cluster.deliverAll()
        return cluster
    }

    private func expectRefused(
        _ outcome: StepOutcome, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard case .refused(let reason) = outcome else {
            Issue.record("expected a refusal mentioning '\(fragment)', got \(outcome)", sourceLocation: sourceLocation)
            return
        }
        #expect(reason.contains(fragment), "reason: \(reason)", sourceLocation: sourceLocation)
    }

    /// The cluster still commits a proposal everywhere after the hostile message.
    private func expectStillServes(_ cluster: TestCluster, sourceLocation: SourceLocation = #_sourceLocation) throws {
        cluster.tickAll(3)
        let leader = try #require(cluster.leaders.first, sourceLocation: sourceLocation)
        _ = try cluster[leader].propose([42])
        cluster.deliverAll()
        cluster.tickAll(2)
        let last = cluster[leader].lastIndex
        for id: NodeID in [1, 2, 3] {
            #expect(cluster[id].commitIndex == last, "member \(id)", sourceLocation: sourceLocation)
        }
    }

    // MARK: F1: proposals from peers

    @Test func aForwardedMembershipChangeIsRefusedAndTheConfigurationStays() throws {
        let cluster = try leading()
        let before = cluster[1].configuration
        for data in [[], ConfigurationChange.remove(3).encoded, ConfigurationChange.remove(1).encoded] {
            var propose = Message(kind: .propose, from: 2, to: 1, term: cluster[1].term)
            propose.entries = [Entry(term: 0, index: 0, kind: .configurationChange, data: data)]
            expectRefused(cluster[1].step(propose), "membership change")
        }
        cluster.deliverAll()
        #expect(cluster[1].configuration == before)
        #expect(cluster.applied[1]!.allSatisfy { $0.index == 1 || $0.kind == .normal })
        try expectStillServes(cluster)
    }

    @Test func peerProposalsAreRefusedWhenForwardingIsOff() throws {
        let cluster = TestCluster(voters: [1, 2, 3]) { $0.forwardProposals = false }
        cluster.elect(1)
        let last = cluster[1].lastIndex
        var propose = Message(kind: .propose, from: 3, to: 1, term: cluster[1].term)
        propose.entries = [Entry(term: 0, index: 0, data: [7])]
        expectRefused(cluster[1].step(propose), "not forwarded")
        cluster.deliverAll()
        #expect(cluster[1].lastIndex == last)
    }

    /// A committed change that does not decode (written by an older or broken member) is
    /// skipped alike everywhere and reported, never a trap — not even after a restart.
    @Test func anUndecodableCommittedChangeIsSkippedAndReported() throws {
        let garbage = Entry(term: 1, index: 1, kind: .configurationChange, data: [9, 9])
        let cluster = TestCluster(voters: [1, 2, 3], logs: [1: [garbage], 2: [garbage], 3: [garbage]], term: 1)
        cluster.elect(1)
        cluster.tickAll(2)
        for id: NodeID in [1, 2, 3] {
            #expect(cluster[id].appliedIndex >= 1)
            #expect(cluster[id].takeIgnoredChanges() == [1], "member \(id)")
            #expect(cluster[id].configuration == Configuration(voters: [1, 2, 3]))
        }
        try expectStillServes(cluster)
    }

    // MARK: F2: terms

    @Test func aTermAtTheTopOfTheRangeIsRefusedAndNeverAdopted() throws {
        let cluster = try leading()
        let term = cluster[3].term
        for hostile: UInt64 in [.max, .max - 1, MessageLimits.maxWireValue + 1] {
            var response = Message(kind: .heartbeatResponse, from: 2, to: 3, term: hostile)
            response.index = 1
            expectRefused(cluster[3].step(response), "above")
        }
        var jump = Message(kind: .heartbeatResponse, from: 2, to: 3, term: term + MessageLimits.maxTermJump + 1)
        jump.index = 1
        expectRefused(cluster[3].step(jump), "ahead of ours")
        #expect(cluster[3].term == term)
        cluster.tickAll(3 * cluster[3].config.electionTicks)
        #expect(cluster[3].term == term)
        try expectStillServes(cluster)
    }

    // MARK: F3: indexes

    @Test func anAcknowledgementBeyondTheLeadersLogIsRefused() throws {
        let cluster = try leading()
        for index in [UInt64.max, cluster[1].lastIndex + 1] {
            var ack = Message(kind: .appendResponse, from: 2, to: 1, term: cluster[1].term)
            ack.index = index
            expectRefused(cluster[1].step(ack), index == .max ? "above" : "beyond our last")
        }
        #expect(cluster[1].matchIndexes[2]! <= cluster[1].lastIndex)
        try expectStillServes(cluster)
    }

    @Test func aRejectionWithAnExtremeHintIsRefused() throws {
        let cluster = try leading()
        let term = cluster[1].term
        var reject = Message(kind: .appendResponse, from: 2, to: 1, term: term)
        reject.reject = true
        reject.index = cluster[1].lastIndex
        reject.rejectHint = .max
        expectRefused(cluster[1].step(reject), "above")
        reject.rejectHint = reject.index + 1
        reject.logTerm = 1
        expectRefused(cluster[1].step(reject), "rejection hint")
        try expectStillServes(cluster)
    }

    @Test func anAppendOrSnapshotAtAnExtremeIndexIsRefused() throws {
        let cluster = try leading()
        let term = cluster[1].term
        var append = Message(kind: .append, from: 1, to: 2, term: term)
        append.index = .max
        append.logTerm = term
        expectRefused(cluster[2].step(append), "above")
        var snapshot = Message(kind: .snapshot, from: 1, to: 3, term: term)
        snapshot.snapshot = Snapshot(
            metadata: SnapshotMetadata(index: .max, term: term, configuration: cluster[1].configuration), data: [])
        expectRefused(cluster[3].step(snapshot), "above")
        try expectStillServes(cluster)
    }

    @Test func appendEntriesThatDoNotFollowEachOtherAreRefused() throws {
        let cluster = try leading()
        let term = cluster[1].term
        let last = cluster[2].lastIndex
        var gap = Message(kind: .append, from: 1, to: 2, term: term)
        gap.index = last
        gap.logTerm = term
        gap.entries = [Entry(term: term, index: last + 1, data: [1]), Entry(term: term, index: last + 3, data: [2])]
        expectRefused(cluster[2].step(gap), "must follow")
        var backwards = gap
        backwards.entries = [
            Entry(term: term, index: last + 1, data: [1]), Entry(term: term - 1, index: last + 2, data: [2]),
        ]
        expectRefused(cluster[2].step(backwards), "out of order")
        #expect(cluster[2].lastIndex == last)
        try expectStillServes(cluster)
    }

    /// Entries that restate committed indexes with another term, after a previous index at the
    /// commit point: the core used to reach its own precondition (or slice out of range); now
    /// the append is refused and the log stays.
    @Test func anAppendRestatingCommittedEntriesIsRefused() throws {
        let cluster = try leading()
        let committed = cluster[2].commitIndex
        try #require(committed >= 2 && cluster[2].term(at: 1) == 1)
        var rewrite = Message(kind: .append, from: 1, to: 2, term: cluster[1].term)
        rewrite.index = committed
        rewrite.logTerm = cluster[2].term(at: committed)!
        rewrite.entries = [Entry(term: 0, index: 1, data: [0xEE])]
        expectRefused(cluster[2].step(rewrite), "must follow")
        #expect(cluster[2].commitIndex == committed && cluster[2].term(at: 1) == 1 && cluster[2].lastIndex == committed)
        try expectStillServes(cluster)
    }

    @Test func aLeaseEchoFromTheFutureIsRefused() throws {
        let cluster = try leading()
        var echo = Message(kind: .heartbeatResponse, from: 2, to: 1, term: cluster[1].term)
        echo.index = 1 << 40
        expectRefused(cluster[1].step(echo), "lease clock")
        #expect(!cluster[1].holdsLease)
        try expectStillServes(cluster)
    }

    // MARK: F13: only the term's leader

    @Test func aReadAnswerFromAMemberThatDoesNotLeadIsRefused() throws {
        let cluster = try leading()
        try cluster[2].requestRead(context: [1])
        cluster.queue.removeAll() // the real request never reaches the leader
        var forged = Message(kind: .readIndexResponse, from: 3, to: 2, term: cluster[2].term)
        forged.index = 0
        forged.context = [1]
        expectRefused(cluster[2].step(forged), "member 1 leads")
        cluster.settleReadies()
        #expect(cluster.readStates[2, default: []].isEmpty)
    }

    @Test func aTimeoutNowFromAMemberThatDoesNotLeadIsRefused() throws {
        let cluster = try leading()
        let term = cluster[2].term
        expectRefused(cluster[2].step(Message(kind: .timeoutNow, from: 3, to: 2, term: term)), "member 1 leads")
        cluster.settleReadies()
        #expect(cluster[2].role == .follower && cluster[2].term == term)
        #expect(cluster.leaders == [1])
    }

    @Test func appendsAndHeartbeatsFromAMemberThatDoesNotLeadAreRefused() throws {
        let cluster = try leading()
        let term = cluster[2].term
        var heartbeat = Message(kind: .heartbeat, from: 3, to: 2, term: term)
        heartbeat.commit = 0
        expectRefused(cluster[2].step(heartbeat), "member 1 leads")
        var append = Message(kind: .append, from: 3, to: 2, term: term)
        append.index = cluster[2].lastIndex
        append.logTerm = cluster[2].term(at: append.index)!
        append.entries = [Entry(term: term, index: append.index + 1, data: [5])]
        expectRefused(cluster[2].step(append), "member 1 leads")
        #expect(cluster[2].leader == 1)
        try expectStillServes(cluster)
    }
}
