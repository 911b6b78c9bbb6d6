import Raft
import Synchronization

/// What a member last said about itself when the front polled it.
struct MemberReport: Sendable, Equatable {
    var term: UInt64
    var leader: NodeID
    var serving: Bool
    var health: HealthReport
    var alarms: [Alarm.Kind]
    var appliedIndex: UInt64
    /// The highest log command kind it applies (0: a member too old to say).
    var commandKinds: UInt32 = 0
    /// Its wall clock minus this member's, as the poll measured it (nil: this member itself,
    /// or one too old to say).
    var clockOffsetMillis: Int64?

    /// Can answer a linearizable read: serving, knows a leader, its disk is not failing.
    var canServeReads: Bool {
        serving && leader != 0 && health.state != .down && !health.reasons.contains { $0.contains("disk is failing") }
    }
}

/// The front's routing knowledge: the leader, each member's latest report, and how calls to it
/// have gone. Members that fail health checks or answer far slower than the rest are ejected
/// from read routing for a while (longer each time) and re-admitted when they recover.
/// Pure: every time is passed in (uptime nanoseconds), so that tests drive it directly.
struct RoutingTable: Sendable {
    struct Options: Sendable {
        /// Polls missed in a row before a member is taken out of routing.
        var failedPollsToEject = 2
        /// Calls failed in a row (the member's fault, not the request's) before ejection.
        var failedCallsToEject = 3
        /// A member whose latency average exceeds this many times the others' median is an outlier...
        var outlierFactor = 3.0
        /// ...and at least this slow (so that 0.3 ms against 0.1 ms is not an outlier).
        var outlierFloorMicroseconds = 10_000.0
        var outlierMinimumSamples = 20
        var baseEjectionNanoseconds: UInt64 = 2_000_000_000
        var maxEjectionNanoseconds: UInt64 = 30_000_000_000
        /// Weight of the newest sample in the latency average.
        var latencyWeight = 0.1
    }

    struct Member: Sendable {
        var id: NodeID
        var report: MemberReport?
        var failedPolls = 0
        var failedCalls = 0
        var pollRoundTripMicroseconds: UInt64?
        var lastAnsweredAt: UInt64?
        var latencyMicroseconds = 0.0
        var samples = 0
        var inFlight = 0
        var ejection: Ejection?
        var ejections = 0
    }

    /// Why a member is out of read routing: until a poll shows it healthy, or for a time.
    enum Ejection: Sendable, Equatable {
        case unhealthy(String)
        case timed(until: UInt64, String)

        var reason: String {
            switch self {
            case .unhealthy(let why): return why
            case .timed(_, let why): return why
            }
        }
    }

    let options: Options
    private(set) var members: [NodeID: Member] = [:]
    private(set) var leader: NodeID = 0
    private(set) var leaderTerm: UInt64 = 0

    init(options: Options = Options()) { self.options = options }

    /// Members that are not known to apply command `kind` (they report a lower one, or have
    /// not reported): while any is a voter, that kind must not be proposed.
    func membersNotApplying(kind: UInt8) -> [NodeID] {
        members.values.filter { ($0.report?.commandKinds ?? 0) < UInt32(kind) }.map(\.id).sorted()
    }

    mutating func setMembers(_ ids: Set<NodeID>) {
        for id in ids where members[id] == nil { members[id] = Member(id: id) }
        for id in members.keys where !ids.contains(id) { members[id] = nil }
        if !ids.contains(leader) { leader = 0 }
    }

    /// A leader named by a response header, a poll or a refusal. A newer term always wins; a
    /// hint without a term (0) replaces an unknown leader only.
    mutating func learnLeader(_ id: NodeID, term: UInt64) {
        guard id != 0, members[id] != nil else { return }
        if term > leaderTerm || (term == leaderTerm && leader == 0) || (term == 0 && leader == 0) {
            leader = id
            leaderTerm = max(term, leaderTerm)
        }
    }

    /// The leader is gone or refused a write as a follower: forget it until told again.
    mutating func forgetLeader(_ id: NodeID) {
        if leader == id { leader = 0 }
    }

    // MARK: Observations

    mutating func pollSucceeded(_ id: NodeID, _ report: MemberReport, roundTripMicroseconds: UInt64, now: UInt64) {
        guard var member = members[id] else { return }
        member.report = report
        member.failedPolls = 0
        member.pollRoundTripMicroseconds = roundTripMicroseconds
        member.lastAnsweredAt = now
        if case .unhealthy? = member.ejection, report.canServeReads { readmit(&member) }
        if !report.canServeReads { eject(&member, .unhealthy(Self.describe(report)), now: now) }
        members[id] = member
        if report.term >= leaderTerm, report.leader != 0 { learnLeader(report.leader, term: report.term) }
        if report.leader == 0 && leader == id { forgetLeader(id) }
    }

    mutating func pollFailed(_ id: NodeID, now: UInt64) {
        guard var member = members[id] else { return }
        member.failedPolls += 1
        if member.failedPolls >= options.failedPollsToEject {
            eject(&member, .unhealthy("\(member.failedPolls) polls unanswered"), now: now)
            if leader == id { leader = 0 }
        }
        members[id] = member
    }

    mutating func callStarted(_ id: NodeID) { members[id]?.inFlight += 1 }

    /// A call ended. `memberFault`: the member (not the request) failed it — unreachable,
    /// not serving, or a storage error.
    mutating func callFinished(_ id: NodeID, latencyMicroseconds: Double, memberFault: Bool, now: UInt64) {
        guard var member = members[id] else { return }
        member.inFlight = max(0, member.inFlight - 1)
        if memberFault {
            member.failedCalls += 1
            if member.failedCalls >= options.failedCallsToEject {
                eject(
                    &member, .timed(until: now + backoff(member), "\(member.failedCalls) calls failed in a row"),
                    now: now)
            }
        } else {
            member.failedCalls = 0
            member.latencyMicroseconds =
                member.samples == 0
                ? latencyMicroseconds
                : member.latencyMicroseconds + options.latencyWeight
                    * (latencyMicroseconds - member.latencyMicroseconds)
            member.samples += 1
        }
        members[id] = member
        ejectOutliers(now: now)
    }

    // MARK: Routing

    /// Whether `id` takes linearizable reads now, and if not, why.
    func readable(_ id: NodeID, now: UInt64) -> Bool {
        guard let member = members[id] else { return false }
        switch member.ejection {
        case .unhealthy?: return false
        case .timed(let until, _)? where until > now: return false
        default: break
        }
        return member.failedPolls < options.failedPollsToEject && (member.report?.canServeReads ?? true)
    }

    /// Members for linearizable reads; when none qualifies, every member that answers polls
    /// (a degraded answer beats none).
    func readCandidates(now: UInt64) -> [NodeID] {
        let good = members.keys.filter { readable($0, now: now) }.sorted()
        if !good.isEmpty { return good }
        return members.values.filter { $0.failedPolls < options.failedPollsToEject && $0.report?.serving != false }.map(
            \.id
        ).sorted()
    }

    /// Of two random candidates, the one with less expected wait (in-flight calls times
    /// average latency): spreads load and avoids slow members without herding.
    func pickForRead(now: UInt64, random: inout some RandomNumberGenerator) -> NodeID? {
        let candidates = readCandidates(now: now)
        guard !candidates.isEmpty else { return nil }
        if candidates.count == 1 { return candidates[0] }
        let first = candidates.randomElement(using: &random)!
        var second = candidates.randomElement(using: &random)!
        if second == first { second = candidates[(candidates.firstIndex(of: first)! + 1) % candidates.count] }
        func cost(_ id: NodeID) -> Double {
            let member = members[id]!
            return Double(member.inFlight + 1) * max(member.latencyMicroseconds, 1)
        }
        return cost(first) <= cost(second) ? first : second
    }

    /// Where a write goes: the leader when known and answering; otherwise any answering member
    /// (it refuses naming the leader, or says none is known yet).
    func writeTarget(now: UInt64, random: inout some RandomNumberGenerator) -> NodeID? {
        if leader != 0, let member = members[leader], member.failedPolls < options.failedPollsToEject { return leader }
        let answering = members.values.filter {
            $0.failedPolls < options.failedPollsToEject && $0.report?.serving != false
        }.map(\.id).sorted()
        return answering.randomElement(using: &random) ?? members.keys.sorted().randomElement(using: &random)
    }

    // MARK: Ejection

    /// A member far slower than the others' median is ejected, never leaving fewer than one
    /// member for reads.
    private mutating func ejectOutliers(now: UInt64) {
        let measured = members.values.filter { $0.samples >= options.outlierMinimumSamples && $0.ejection == nil }
        guard measured.count >= 2 else { return }
        for member in measured {
            let others = measured.filter { $0.id != member.id }.map(\.latencyMicroseconds).sorted()
            let median = others[others.count / 2]
            guard member.latencyMicroseconds > max(median * options.outlierFactor, options.outlierFloorMicroseconds)
            else { continue }
            guard readCandidates(now: now).count > 1 else { return }
            var slow = member
            let why =
                "latency outlier: \(Int(slow.latencyMicroseconds / 1000)) ms average against \(Int(median / 1000)) ms"
            eject(&slow, .timed(until: now + backoff(slow), why), now: now)
            members[slow.id] = slow
        }
    }

    /// Takes a member out of read routing. An unhealthy verdict replaces a timed one; a timed
    /// one never shortens or replaces another ejection.
    private mutating func eject(_ member: inout Member, _ ejection: Ejection, now: UInt64) {
        switch (member.ejection, ejection) {
        case (nil, _):
            member.ejections += 1
            member.ejection = ejection
        case (.timed?, .unhealthy), (.unhealthy?, .unhealthy):
            member.ejection = ejection
        case (_, .timed):
            return
        }
    }

    /// Each ejection of the same member lasts twice as long as the one before, up to the cap.
    private func backoff(_ member: Member) -> UInt64 {
        min(options.baseEjectionNanoseconds << UInt64(min(member.ejections, 8)), options.maxEjectionNanoseconds)
    }

    private mutating func readmit(_ member: inout Member) {
        member.ejection = nil
        member.samples = 0
        member.latencyMicroseconds = 0
        member.failedCalls = 0
    }

    /// Timed ejections that have run out are lifted (called before each routing decision).
    mutating func readmitExpired(now: UInt64) {
        for (id, member) in members {
            guard case .timed(let until, _)? = member.ejection, until <= now else { continue }
            var readmitted = member
            readmit(&readmitted)
            members[id] = readmitted
        }
    }

    static func describe(_ report: MemberReport) -> String {
        if !report.serving { return "not serving (" + report.health.reasons.joined(separator: "; ") + ")" }
        if report.leader == 0 { return "knows no leader" }
        return report.health.state.rawValue + ": " + report.health.reasons.joined(separator: "; ")
    }
}

/// The routing table shared by the front's router, its poller and the health monitor.
final class SharedRoutingTable: Sendable {
    private let mutex: Mutex<RoutingTable>

    init(_ table: RoutingTable = RoutingTable()) { mutex = Mutex(table) }

    func withLock<R: Sendable>(_ body: (inout RoutingTable) -> R) -> R {
        mutex.withLock { body(&$0) }
    }
}
