import CRMProto
import Dispatch
import GRPCCore
import Logging
import Raft
import Synchronization

/// Asks every member for its state (`MemberState`) every poll interval, in parallel, and feeds
/// the answers — or their absence — to the routing table. This node's own member is read in
/// process. The health monitor reads the same table for its view of the peers.
final class MemberPoller: Sendable {
    let selfID: NodeID
    let interval: Duration
    private let table: SharedRoutingTable
    private let members: MemberClients
    private let ownState: @Sendable () -> Crm_V1_MemberStateResponse
    private let memberIDs: @Sendable () -> Set<NodeID>
    private let metrics: FrontMetrics
    private let logger: Logger
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(
        selfID: NodeID, interval: Duration, table: SharedRoutingTable, members: MemberClients, metrics: FrontMetrics,
        ownState: @escaping @Sendable () -> Crm_V1_MemberStateResponse,
        memberIDs: @escaping @Sendable () -> Set<NodeID>, logger: Logger
    ) {
        self.selfID = selfID
        self.interval = interval
        self.table = table
        self.members = members
        self.metrics = metrics
        self.ownState = ownState
        self.memberIDs = memberIDs
        self.logger = logger
    }

    func start() {
        task.withLock { task in
            task = Task { [self] in
                while !Task.isCancelled {
                    await pollOnce()
                    try? await Task.sleep(for: interval)
                }
            }
        }
    }

    func stop() async {
        let running = task.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        running?.cancel()
        await running?.value
    }

    /// One round: every member at once, each bounded by three intervals (at most 1 s).
    func pollOnce() async {
        let ids = memberIDs()
        table.withLock { $0.setMembers(ids) }
        let timeout = min(interval * 3, .seconds(1))
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask { [self] in await poll(id, timeout: timeout) }
            }
        }
        let now = DispatchTime.now().uptimeNanoseconds
        let readable = table.withLock { table in ids.map { ($0, table.readable($0, now: now)) } }
        for (id, isReadable) in readable { metrics.setRoutable(id, isReadable) }
    }

    private func poll(_ id: NodeID, timeout: Duration) async {
        let started = DispatchTime.now().uptimeNanoseconds
        let sentAt = WallClock.nowMillis()
        do {
            let state: Crm_V1_MemberStateResponse
            if id == selfID {
                state = ownState()
            } else {
                var options = CallOptions.defaults
                options.timeout = timeout
                state = try await members.kv(id).memberState(Crm_V1_MemberStateRequest(), options: options)
            }
            let now = DispatchTime.now().uptimeNanoseconds
            var report = Self.report(state)
            if id != selfID, state.wallClockMs != 0 {
                // Its clock against ours halfway through the round trip.
                let midway = sentAt / 2 + WallClock.nowMillis() / 2
                report.clockOffsetMillis = Int64(clamping: state.wallClockMs) &- Int64(clamping: midway)
            }
            table.withLock { $0.pollSucceeded(id, report, roundTripMicroseconds: (now - started) / 1000, now: now) }
        } catch {
            let now = DispatchTime.now().uptimeNanoseconds
            table.withLock { $0.pollFailed(id, now: now) }
        }
    }

    static func report(_ state: Crm_V1_MemberStateResponse) -> MemberReport {
        let health: HealthReport.State
        switch state.health.state {
        case .healthy: health = .healthy
        case .degraded: health = .degraded
        default: health = .down
        }
        return MemberReport(
            term: state.term, leader: state.leaderID, serving: state.serving,
            health: HealthReport(state: health, reasons: state.health.reasons),
            alarms: state.alarms.compactMap { alarm in
                switch alarm.kind {
                case .nospace: return .noSpace
                case .corrupt: return .corrupt
                case .crmkey: return .crmKey
                case .tamper: return .tamper
                case .authAttack: return .authAttack
                case .clockSkew: return .clockSkew
                case .auditBacklog: return .auditBacklog
                case .backupStale: return .backupStale
                case .backupGap: return .backupGap
                default: return nil
                }
            },
            appliedIndex: state.appliedIndex, commandKinds: state.commandKinds)
    }

    /// The peers as the health monitor sees them.
    func observations() -> [NodeID: PeerObservation] {
        table.withLock { table in
            table.members.filter { $0.key != selfID }.mapValues { member in
                var seen = PeerObservation()
                seen.lastAnsweredAt = member.lastAnsweredAt
                seen.roundTripMicroseconds = member.pollRoundTripMicroseconds
                seen.report = member.report?.health
                seen.alarms = member.report?.alarms ?? []
                seen.serving = member.report?.serving ?? false
                seen.appliedIndex = member.report?.appliedIndex ?? 0
                seen.clockOffsetMillis = member.report?.clockOffsetMillis
                return seen
            }
        }
    }
}
