import Testing

@testable import Raft

/// One test per feature of the core that the scenario tests do not already pin down.
@Suite struct ProtocolDetailTests {
    // MARK: Elections

    /// Election timeouts are drawn from [electionTicks, 2 × electionTicks), differently per seed.
    @Test func electionTimeoutsAreRandomizedWithinOneToTwoTimeouts() {
        var timeouts: Set<Int> = []
        for seed: UInt64 in 1...40 {
            let store = MemoryLogStore(configuration: Configuration(voters: [1, 2, 3]))
            let node = RaftNode(
                config: RaftConfig(id: 1), store: store, hardState: HardState(), random: SeededRandom(seed: seed))
            var ticks = 0
            while node.role == .follower {
                node.tick()
                ticks += 1
            }
            #expect((10..<20).contains(ticks), "seed \(seed) campaigned after \(ticks) ticks")
            timeouts.insert(ticks)
        }
        #expect(timeouts.count >= 5)
    }

    /// §5.4.1 compares last terms first: a longer log of an older term loses to a shorter one
    /// of a newer term.
    @Test func candidateWithAnOlderLastTermButALongerLogCannotWin() {
        let cluster = TestCluster(
            voters: [1, 2, 3], logs: [1: entries([1, 1, 1, 1]), 2: entries([1, 3]), 3: entries([1, 3])], term: 3)
        cluster.elect(1)
        #expect(cluster.leaders.isEmpty)
        cluster.elect(2)
        #expect(cluster.leaders == [2])
    }

    /// A lost vote request (or answer) is asked again at the next heartbeat interval, so the
    /// election does not wait for a whole new timeout.
    @Test func lostVoteRequestsAreAskedAgainEveryHeartbeatInterval() {
        let cluster = TestCluster(voters: [1, 2, 3]) { $0.preVote = false }
        cluster.cut = [[1, 2], [1, 3]]
        while cluster[1].role == .follower { cluster[1].tick() }
        cluster.deliverAll()
        #expect(cluster[1].role == .candidate)
        cluster.heal()
        for _ in 0..<cluster[1].config.heartbeatTicks { cluster[1].tick() }
        cluster.deliverAll()
        #expect(cluster[1].role == .leader)
    }

    // MARK: Replication

    /// Appends stay within the message size bound, but always carry at least one entry.
    @Test func appendsRespectTheSizeBoundAndCarryAtLeastOneEntry() throws {
        let cluster = TestCluster(voters: [1, 2]) { $0.maxMessageBytes = 200 }
        cluster.elect(1)
        cluster.cut = [[1, 2]]
        for _ in 0..<6 { _ = try cluster[1].propose([UInt8](repeating: 7, count: 60)) }
        _ = try cluster[1].propose([UInt8](repeating: 8, count: 1000))
        cluster.deliverAll()
        cluster.heal()
        cluster[1].reportUnreachable(peer: 2)
        var sizes: [Int] = []
        for _ in 0..<3 {
            cluster[1].tick()
            cluster.deliverAll { message in
                if message.kind == .append && !message.entries.isEmpty {
                    sizes.append(message.entries.reduce(0) { $0 + $1.sizeBytes })
                }
                return true
            }
        }
        #expect(cluster[2].commitIndex == cluster[1].lastIndex)
        #expect(sizes.contains(1000 + 24)) // the 1000-byte entry went alone
        #expect(sizes.filter { $0 <= 200 }.count >= 2)
        #expect(sizes.allSatisfy { $0 <= 200 || $0 == 1000 + 24 })
        #expect(sizes.contains { $0 > 84 }) // small entries were batched, two to a message
    }

    /// While replicating, the leader pipelines appends up to the in-flight window, then waits.
    @Test func pipeliningStopsAtTheInFlightWindow() throws {
        let cluster = TestCluster(voters: [1, 2]) { $0.maxInflightMessages = 3 }
        cluster.elect(1)
        cluster.queue.removeAll()
        for value in 0..<8 { _ = try cluster[1].propose([UInt8(value)]); cluster.settleReadies() }
        let appends = cluster.queue.filter { $0.kind == .append && $0.to == 2 }
        #expect(appends.count == 3)
        #expect(cluster[1].progress[2]?.state == .replicate)
        cluster.deliverAll()
        cluster.tickAll(2)
        #expect(cluster[2].commitIndex == cluster[1].lastIndex)
    }

    /// The window is also bounded in bytes: appends stop once the unanswered ones carry
    /// `maxInflightBytes` (one always goes, however large), and resume as answers free it.
    @Test func pipeliningStopsAtTheInFlightBytes() throws {
        let cluster = TestCluster(voters: [1, 2]) {
            $0.maxInflightBytes = 2_500
            $0.maxMessageBytes = 1
        }
        cluster.elect(1)
        cluster.queue.removeAll()
        for _ in 0..<6 {
            _ = try cluster[1].propose([UInt8](repeating: 7, count: 1_000))
            cluster.settleReadies()
        }
        let appends = cluster.queue.filter { $0.kind == .append && $0.to == 2 }
        #expect(appends.count == 3, "1,024 bytes each: the third reaches 2,500")
        #expect(cluster[1].progress[2]?.inflights.bytes == 3 * 1_024)
        cluster.deliverAll()
        cluster.tickAll(2)
        cluster.deliverAll()
        #expect(cluster[2].commitIndex == cluster[1].lastIndex)
        #expect(cluster[1].progress[2]?.inflights.bytes == 0)

        var window = Inflights(capacity: 4, maxBytes: 100)
        window.add(1, bytes: 5_000)
        #expect(window.isFull)
        window.freeTo(1)
        #expect(!window.isFull && window.bytes == 0)
        window.add(2, bytes: 40)
        window.add(3, bytes: 40)
        #expect(!window.isFull)
        window.add(4, bytes: 40)
        #expect(window.isFull && window.bytes == 120)
        window.freeFirst()
        #expect(!window.isFull && window.bytes == 80)
    }

    /// A follower whose position is unknown is probed with one append at a time.
    @Test func probingSendsOneAppendAtATime() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.isolate(3)
        for _ in 0..<4 { _ = try cluster[1].propose([1]) }
        cluster.deliverAll()
        cluster.heal()
        cluster[1].reportUnreachable(peer: 3)
        #expect(cluster[1].progress[3]?.state == .probe)
        cluster.queue.removeAll()
        _ = try cluster[1].propose([2])
        _ = try cluster[1].propose([3])
        cluster.settleReadies()
        #expect(cluster.queue.filter { $0.kind == .append && $0.to == 3 }.count == 1)
        cluster.deliverAll()
        #expect(cluster[1].progress[3]?.state == .replicate)
    }

    /// A long conflicting tail is skipped a term at a time, not an entry at a time.
    @Test func conflictingTailIsSkippedATermAtATime() throws {
        let cluster = TestCluster(
            voters: [1, 2, 3],
            logs: [
                1: entries([1, 1] + Array(repeating: 3, count: 40)),
                2: entries([1, 1] + Array(repeating: 3, count: 40)),
                3: entries([1, 1] + Array(repeating: 2, count: 60)),
            ],
            term: 3)
        while cluster[1].role == .follower { cluster[1].tick() }
        var rejections = 0
        cluster.deliverAll { message in
            if message.kind == .appendResponse && message.reject && message.from == 3 { rejections += 1 }
            return true
        }
        cluster.tickAll(3)
        #expect(rejections >= 1 && rejections <= 3)
        #expect(cluster.stores[3]!.lastIndex == cluster.stores[1]!.lastIndex)
        #expect(cluster.stores[3]!.term(at: 42) == 3)
    }

    // MARK: Reads

    private func leaseCluster() -> TestCluster {
        let cluster = TestCluster(voters: [1, 2, 3]) { $0.leaseClockDriftBoundTicks = 2 }
        // Freshly started members ignore campaigns for an election timeout.
        for _ in 0..<cluster[2].config.electionTicks { cluster[2].tick(); cluster[3].tick() }
        cluster.elect(1)
        cluster.tickAll(2)
        return cluster
    }

    /// With a lease, the leader answers a read at once, without a heartbeat round.
    @Test func leaseReadIsAnsweredAtOnceWhileAQuorumAcknowledgedRecently() throws {
        let cluster = leaseCluster()
        #expect(cluster[1].holdsLease)
        try cluster[1].requestRead(context: [9])
        let ready = cluster[1].ready()
        #expect(ready.readStates == [ReadState(index: cluster[1].commitIndex, context: [9])])
        #expect(!ready.messages.contains { $0.kind == .heartbeat })
        cluster[1].advance(ready)
    }

    /// Without fresh acknowledgements the lease runs out before the followers could elect
    /// another leader; then reads fall back to ReadIndex (and, cut off, get no answer).
    @Test func leaseRunsOutWithoutAcknowledgements() throws {
        let cluster = leaseCluster()
        cluster.isolate(1)
        let leaseTicks = cluster[1].config.electionTicks - 2 - 2
        for _ in 0..<leaseTicks { cluster[1].tick(); cluster.deliverAll() }
        #expect(!cluster[1].holdsLease)
        #expect(cluster[1].role == .leader)
        try cluster[1].requestRead(context: [1])
        cluster.deliverAll()
        #expect(cluster.readStates[1, default: []].isEmpty)
    }

    /// A leadership transfer may end this leadership at any moment: no lease reads after it.
    @Test func leaseIsRevokedByALeadershipTransfer() throws {
        let cluster = leaseCluster()
        cluster.isolate(3)
        try cluster[1].transferLeadership(to: 3)
        #expect(!cluster[1].holdsLease)
        cluster.tickAll(cluster[1].config.electionTicks)
        #expect(cluster[1].transferee == 0)
        #expect(!cluster[1].holdsLease)
    }

    /// With lease reads, a member that has just started ignores campaigns for an election
    /// timeout: it may have acknowledged a heartbeat that a leader's lease still counts on.
    @Test func aStartingMemberIgnoresCampaignsForAnElectionTimeoutWithLeases() {
        for lease in [false, true] {
            let store = MemoryLogStore(configuration: Configuration(voters: [1, 2, 3]))
            var config = RaftConfig(id: 2)
            config.leaseClockDriftBoundTicks = lease ? 2 : nil
            let node = RaftNode(
                config: config, store: store, hardState: HardState(term: 5), random: SeededRandom(seed: 1))
            var request = Message(kind: .preVote, from: 3, to: 2, term: 6)
            request.index = 0
            node.step(request)
            let ready = node.ready()
            let answer = ready.messagesAfterPersist.first { $0.kind == .preVoteResponse }
            if lease {
                #expect(answer == nil, "a starting member answered a campaign")
            } else {
                #expect(answer?.reject == false)
            }
            node.advance(ready)
        }
    }

    // MARK: Leadership transfer and membership

    /// A transfer to a member that does not catch up is abandoned after an election timeout,
    /// and proposals are taken again.
    @Test func anAbandonedTransferLetsProposalsResume() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        cluster.isolate(3)
        _ = try cluster[1].propose([1])
        cluster.deliverAll()
        try cluster[1].transferLeadership(to: 3)
        #expect(throws: RaftError.transferInProgress) { try cluster[1].propose([2]) }
        for _ in 0..<cluster[1].config.electionTicks { cluster[1].tick(); cluster[2].tick(); cluster.deliverAll() }
        #expect(cluster[1].role == .leader && cluster[1].transferee == 0)
        #expect(throws: Never.self) { try cluster[1].propose([3]) }
    }

    /// Learners get the log but never campaign and never count towards a quorum.
    @Test func learnersNeverCampaignNorCountTowardsTheQuorum() throws {
        let cluster = TestCluster(voters: [1, 2], learners: [3])
        cluster.elect(1)
        cluster.isolate(2)
        let committed = cluster[1].commitIndex
        _ = try cluster[1].propose([1])
        cluster.deliverAll()
        cluster.tickAll(1)
        #expect(cluster.stores[3]!.lastIndex == cluster[1].lastIndex)
        #expect(cluster[1].commitIndex == committed)
        for _ in 0..<100 { cluster[3].tick() }
        #expect(cluster[3].role == .follower && cluster[3].term == cluster[1].term)
    }

    @Test func aLearnerIsPromotedOnlyOnceCaughtUp() throws {
        let cluster = TestCluster(voters: [1, 2, 3], learners: [4])
        cluster.elect(1)
        cluster.isolate(4)
        for value in 0..<5 { _ = try cluster[1].propose([UInt8(value)]) }
        cluster.deliverAll()
        cluster.tickAll(1)
        #expect(throws: RaftError.self) { _ = try cluster[1].proposeChange(.promote(4)) }
        cluster.heal()
        cluster.tickAll(2)
        #expect(throws: Never.self) { _ = try cluster[1].proposeChange(.promote(4)) }
    }

    /// Removing the leader: it steps down once the change is applied, and the rest elect a
    /// new leader among themselves.
    @Test func removingTheLeaderMakesItStepDown() throws {
        let cluster = TestCluster(voters: [1, 2, 3])
        cluster.elect(1)
        _ = try cluster[1].proposeChange(.remove(1))
        cluster.deliverAll()
        cluster.tickAll(1)
        #expect(cluster[1].role == .follower)
        #expect(cluster[2].configuration.voters == [2, 3])
        cluster.nodes[1] = nil
        cluster.tickAll(3 * cluster[2].config.electionTicks)
        #expect(cluster.leaders.count == 1 && cluster.leaders.first != 1)
    }
}
