import CRMProto
import GRPCCore
import KVStore
import Raft
import Testing

@testable import Node

/// The front's routing decisions, driven with explicit times.
@Suite struct RoutingTableTests {
    static let second: UInt64 = 1_000_000_000

    func healthyReport(leader: NodeID = 1, term: UInt64 = 2) -> MemberReport {
        MemberReport(
            term: term, leader: leader, serving: true, health: HealthReport(state: .healthy, reasons: []), alarms: [],
            appliedIndex: 10)
    }

    func table() -> RoutingTable {
        var table = RoutingTable()
        table.setMembers([1, 2, 3])
        for id: NodeID in [1, 2, 3] {
            table.pollSucceeded(id, healthyReport(), roundTripMicroseconds: 300, now: Self.second)
        }
        return table
    }

    /// A member reports the command kinds it applies; a kind may be proposed only once every
    /// member reports it (a member that has not reported, or an older one, holds it back).
    @Test func aCommandKindWaitsForEveryMemberToApplyIt() {
        var table = table()
        #expect(table.membersNotApplying(kind: KVCommand.highestKind) == [1, 2, 3])
        var state = Crm_V1_MemberStateResponse()
        state.term = 2
        state.leaderID = 1
        state.serving = true
        state.commandKinds = UInt32(KVCommand.highestKind)
        let current = MemberPoller.report(state)
        #expect(current.commandKinds == UInt32(KVCommand.highestKind))
        table.pollSucceeded(1, current, roundTripMicroseconds: 300, now: 2 * Self.second)
        table.pollSucceeded(2, current, roundTripMicroseconds: 300, now: 2 * Self.second)
        var older = current
        older.commandKinds = UInt32(KVCommand.highestKind) - 1
        table.pollSucceeded(3, older, roundTripMicroseconds: 300, now: 2 * Self.second)
        #expect(table.membersNotApplying(kind: KVCommand.highestKind) == [3])
        #expect(table.membersNotApplying(kind: KVCommand.highestKind - 1) == [])
        table.pollSucceeded(3, current, roundTripMicroseconds: 300, now: 3 * Self.second)
        #expect(table.membersNotApplying(kind: KVCommand.highestKind) == [])
    }

    @Test func pollsNameTheLeaderAndANewerTermReplacesIt() {
        var table = table()
        #expect(table.leader == 1)
        table.learnLeader(2, term: 1)
        #expect(table.leader == 1, "an older term does not move the leader")
        table.learnLeader(3, term: 3)
        #expect(table.leader == 3 && table.leaderTerm == 3)
        table.forgetLeader(3)
        #expect(table.leader == 0)
        table.learnLeader(2, term: 0)
        #expect(table.leader == 2, "a bare hint fills an unknown leader")
        table.learnLeader(1, term: 0)
        #expect(table.leader == 2, "a bare hint never replaces a known leader")
    }

    @Test func unansweredPollsEjectAMemberUntilItAnswersAgain() {
        var table = table()
        let now = 2 * Self.second
        table.pollFailed(3, now: now)
        #expect(table.readable(3, now: now), "one missed poll is tolerated")
        table.pollFailed(3, now: now)
        #expect(!table.readable(3, now: now))
        #expect(table.readCandidates(now: now) == [1, 2])
        #expect(table.readable(3, now: now + 60 * Self.second) == false, "health ejections do not time out")
        table.pollSucceeded(3, healthyReport(), roundTripMicroseconds: 300, now: now + Self.second)
        #expect(table.readable(3, now: now + Self.second))
    }

    @Test func aMemberWithAFailingDiskOrNoLeaderTakesNoReads() {
        var table = table()
        let failing = MemberReport(
            term: 2, leader: 1, serving: true,
            health: HealthReport(
                state: .degraded, reasons: ["the disk is failing: every synced write for 2000 ms took over 200 ms"]),
            alarms: [], appliedIndex: 10)
        table.pollSucceeded(2, failing, roundTripMicroseconds: 300, now: 2 * Self.second)
        #expect(!table.readable(2, now: 2 * Self.second))
        table.pollSucceeded(3, healthyReport(leader: 0), roundTripMicroseconds: 300, now: 2 * Self.second)
        #expect(table.readCandidates(now: 2 * Self.second) == [1])
        table.pollSucceeded(2, healthyReport(), roundTripMicroseconds: 300, now: 3 * Self.second)
        #expect(table.readCandidates(now: 3 * Self.second) == [1, 2], "re-admitted once it reports healthy")
    }

    @Test func aLatencyOutlierIsEjectedForAGrowingTimeAndReadmitted() {
        var table = table()
        var now = 2 * Self.second
        for _ in 0..<30 {
            for (id, latency) in [(NodeID(1), 500.0), (2, 600.0), (3, 50_000.0)] {
                table.callStarted(id)
                table.callFinished(id, latencyMicroseconds: latency, memberFault: false, now: now)
            }
        }
        #expect(!table.readable(3, now: now), "50 ms against 0.5 ms is an outlier")
        #expect(table.members[3]?.ejection?.reason.contains("latency outlier") == true)
        now += 2 * Self.second + 1
        table.readmitExpired(now: now)
        #expect(table.readable(3, now: now), "the first ejection lasts 2 s")
        for _ in 0..<30 {
            for (id, latency) in [(NodeID(1), 500.0), (2, 600.0), (3, 50_000.0)] {
                table.callStarted(id)
                table.callFinished(id, latencyMicroseconds: latency, memberFault: false, now: now)
            }
        }
        now += 2 * Self.second + 1
        table.readmitExpired(now: now)
        #expect(!table.readable(3, now: now), "the second lasts 4 s")
        now += 2 * Self.second
        table.readmitExpired(now: now)
        #expect(table.readable(3, now: now))
    }

    @Test func outlierEjectionNeverEmptiesTheReadSet() {
        var table = RoutingTable()
        table.setMembers([1, 2])
        for id: NodeID in [1, 2] {
            table.pollSucceeded(id, healthyReport(), roundTripMicroseconds: 300, now: Self.second)
        }
        table.pollFailed(1, now: Self.second)
        table.pollFailed(1, now: Self.second)
        for _ in 0..<30 {
            table.callStarted(2)
            table.callFinished(2, latencyMicroseconds: 90_000, memberFault: false, now: Self.second)
        }
        #expect(table.readCandidates(now: Self.second) == [2])
    }

    @Test func callsFailingInARowEjectAndAWriteGoesToTheLeaderOnly() {
        var table = table()
        var random = SystemRandomNumberGenerator()
        for _ in 0..<20 { #expect(table.writeTarget(now: 2 * Self.second, random: &random) == 1) }
        for _ in 0..<3 {
            table.callStarted(2)
            table.callFinished(2, latencyMicroseconds: 100, memberFault: true, now: 2 * Self.second)
        }
        #expect(!table.readable(2, now: 2 * Self.second))
        for _ in 0..<50 {
            let pick = table.pickForRead(now: 2 * Self.second, random: &random)
            #expect(pick == 1 || pick == 3)
        }
        table.forgetLeader(1)
        for _ in 0..<20 { #expect(table.writeTarget(now: 2 * Self.second, random: &random) != nil) }
    }

    @Test func readsPreferTheLessLoadedOfTwo() {
        var table = table()
        var random = SystemRandomNumberGenerator()
        for id: NodeID in [1, 2, 3] {
            table.callStarted(id)
            table.callFinished(id, latencyMicroseconds: 1000, memberFault: false, now: 2 * Self.second)
        }
        for _ in 0..<10 { table.callStarted(1) }
        var picks: [NodeID: Int] = [:]
        for _ in 0..<300 { picks[table.pickForRead(now: 2 * Self.second, random: &random)!, default: 0] += 1 }
        #expect((picks[1] ?? 0) < (picks[2] ?? 0) && (picks[1] ?? 0) < (picks[3] ?? 0), "picks: \(picks)")
    }
}

@Suite struct RateLimitTests {
    @Test func aBucketAllowsItsBurstThenRefillsAtItsRate() {
        var bucket = TokenBucket(rate: 10, burst: 5, now: 0)
        for _ in 0..<5 { #expect(bucket.take(now: 0).allowed) }
        let refused = bucket.take(now: 0)
        #expect(!refused.allowed && refused.retryAfterMilliseconds == 100)
        #expect(bucket.take(now: 100_000_000).allowed, "one token every 100 ms")
        #expect(!bucket.take(now: 100_000_000).allowed)
        for _ in 0..<5 { #expect(bucket.take(now: 10_000_000_000).allowed) }
        #expect(!bucket.take(now: 10_000_000_000).allowed, "never more than the burst")
    }

    @Test func eachClientHasItsOwnBucketAndTheTableIsBounded() {
        let limiter = RateLimiter(rate: 1, burst: 2, maxClients: 3)
        #expect(limiter.admit("crm://client/a", now: 0).allowed)
        #expect(limiter.admit("crm://client/a", now: 0).allowed)
        #expect(!limiter.admit("crm://client/a", now: 0).allowed)
        #expect(limiter.admit("crm://client/b", now: 0).allowed, "another client is not limited by the first")
        for name in ["c", "d", "e", "f"] { _ = limiter.admit("crm://client/\(name)", now: 1) }
        #expect(limiter.admit("crm://client/a", now: 2).allowed, "a forgotten bucket starts full")
    }
}

@Suite struct SessionPoolTests {
    @Test func sessionsAreReusedWithTheNextNumberAndBounded() async {
        let pool = SessionPool(capacity: 2)
        let opened = Counter()
        let first = await pool.acquire { await opened.next() }
        let second = await pool.acquire { await opened.next() }
        #expect(
            first == SessionPool.Lease(sessionID: 1, sequence: 1)
                && second == SessionPool.Lease(sessionID: 2, sequence: 1))
        #expect(await pool.acquire { await opened.next() } == nil, "at capacity")
        pool.release(first!)
        #expect(await pool.acquire { await opened.next() } == SessionPool.Lease(sessionID: 1, sequence: 2))
        pool.discard(second!)
        #expect(
            await pool.acquire { await opened.next() } == SessionPool.Lease(sessionID: 3, sequence: 1),
            "room for a new one after a discard")
        #expect(await pool.acquire { throw CancellationError() } == nil)
        #expect(pool.openCount == 2)
    }

    actor Counter {
        var value: UInt64 = 0
        func next() -> UInt64 {
            value += 1
            return value
        }
    }
}

/// What the front tells a client when an earlier attempt of its call may have applied.
@Suite struct IndeterminateOutcomeTests {
    @Test func aRefusalAfterAnUnknownAttemptNoLongerSaysNotApplied() {
        var metadata = Metadata()
        metadata.addString("1", forKey: RefusalMetadata.refused)
        metadata.addString("2", forKey: RefusalMetadata.leader)
        let refused = RPCError(code: .unavailable, message: "member 3 is not the leader", metadata: metadata)
        let answer = FrontRouter.indeterminate(refused)
        #expect(!RefusalMetadata.isRefusal(answer), "a refusal of the last attempt proves nothing about an earlier one")
        #expect(
            answer.code == .unavailable && answer.message.contains("outcome unknown")
                && answer.message.contains("member 3 is not the leader"))
    }

    @Test func otherErrorsPassUnchanged() {
        let timeout = RPCError(code: .deadlineExceeded, message: "deadline")
        let answer = FrontRouter.indeterminate(timeout)
        #expect(answer.code == .deadlineExceeded && answer.message == "deadline")
    }
}
