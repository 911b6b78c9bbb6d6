import Engine
import Foundation
import Identity
import Prometheus
import Raft
import Synchronization
import Transport

/// The member's Prometheus metrics. Gauges that mirror the engine's status are refreshed at
/// each scrape; durations are recorded as they happen.
public final class NodeMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    let proposalDuration: DurationHistogram
    let applyDuration: DurationHistogram
    let persistDuration: DurationHistogram
    let readIndexDuration: DurationHistogram
    let authorizationDuration: DurationHistogram
    /// Security alerts raised by this member (it led when they were raised), by kind.
    let loginAlerts: [SecurityAlert.Kind: Counter]
    /// Sign-in attempts refused unchecked during a back-off or lock, or from a blocked network.
    let throttledSignIns: Counter
    private let role: Gauge
    private let term: Gauge
    private let leader: Gauge
    private let commitIndex: Gauge
    private let appliedIndex: Gauge
    private let lastIndex: Gauge
    private let snapshotIndex: Gauge
    private let snapshotsSent: Gauge
    private let snapshotsInstalled: Gauge
    private let compactions: Gauge
    private let forwardedWrites: Gauge
    private let refusedPeerConnections: Gauge
    private let refusedPeerMessages: Gauge
    private let peerGauges = Mutex<[NodeID: (rtt: Gauge, silence: Gauge)]>([:])
    private let listenerGauges = Mutex<[String: [Gauge]]>([:])
    private let refusedBusy: Gauge
    private let droppedBatches: Gauge
    private let healthState: Gauge
    private let alarmGauges: [Alarm.Kind: Gauge]
    private let freeDisk: Gauge
    private let storeSize: Gauge
    private let syncWorst: Gauge
    private let stallWorst: Gauge
    private let applyLag: Gauge
    private let deadMembers: Gauge
    private let auditQueued: Gauge
    private let auditRefused: Gauge
    private let backupNewest: Gauge
    private let backupDrill: Gauge
    private let certificateExpiry = Mutex<[String: Gauge]>([:])

    static let latencyBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500),
        .seconds(1), .seconds(2), .seconds(5),
    ]

    public init() {
        proposalDuration = registry.makeDurationHistogram(
            name: "crm_proposal_duration_seconds", buckets: Self.latencyBuckets,
            help: "From a proposal reaching the Raft loop to its being applied on the leader")
        applyDuration = registry.makeDurationHistogram(
            name: "crm_apply_duration_seconds", buckets: Self.latencyBuckets,
            help: "Applying one batch of committed entries to the state machine")
        persistDuration = registry.makeDurationHistogram(
            name: "crm_fsync_duration_seconds", buckets: Self.latencyBuckets,
            help: "One synced write of the Raft log and hard state")
        readIndexDuration = registry.makeDurationHistogram(
            name: "crm_read_index_duration_seconds", buckets: Self.latencyBuckets,
            help: "From a linearizable read reaching the loop to its read index being applied")
        authorizationDuration = registry.makeDurationHistogram(
            name: "crm_authorization_duration_seconds",
            buckets: [.microseconds(10), .microseconds(25), .microseconds(50)] + Self.latencyBuckets,
            help: "Checking a signed-in records call: principal, session, roles and their conditions")
        var alerts: [SecurityAlert.Kind: Counter] = [:]
        for kind in SecurityAlert.Kind.allCases {
            alerts[kind] = registry.makeCounter(
                name: "crm_login_alerts_total", labels: [("kind", kind.name)],
                help: "Security alerts raised by this member, by kind")
        }
        loginAlerts = alerts
        throttledSignIns = registry.makeCounter(
            name: "crm_signin_throttled_total",
            help: "Sign-in attempts refused before their password was checked (back-off, lock, blocked network)")
        role = registry.makeGauge(name: "crm_raft_role", help: "0 follower, 1 pre-candidate, 2 candidate, 3 leader")
        term = registry.makeGauge(name: "crm_raft_term", help: "The current term")
        leader = registry.makeGauge(name: "crm_raft_leader_id", help: "The leader this member knows of (0: none)")
        commitIndex = registry.makeGauge(name: "crm_raft_commit_index", help: "Highest log index known committed")
        appliedIndex = registry.makeGauge(
            name: "crm_raft_applied_index", help: "Highest log index applied to the state machine")
        lastIndex = registry.makeGauge(name: "crm_raft_last_index", help: "Last index of this member's log")
        snapshotIndex = registry.makeGauge(
            name: "crm_raft_snapshot_index", help: "Index of the latest snapshot (log compacted up to it)")
        snapshotsSent = registry.makeGauge(
            name: "crm_snapshots_sent_total", help: "Snapshots this member sent to followers")
        snapshotsInstalled = registry.makeGauge(
            name: "crm_snapshots_installed_total", help: "Snapshots this member installed from a leader")
        compactions = registry.makeGauge(name: "crm_log_compactions_total", help: "Log compactions")
        forwardedWrites = registry.makeGauge(
            name: "crm_raft_writes_forwarded_total",
            help: "Session writes this member forwarded to the leader in proposal messages (as a follower)")
        refusedPeerConnections = registry.makeGauge(
            name: "crm_tls_peer_connections_refused_total",
            help: "Peer connections closed for a failed TLS handshake, a wrong identity or bad input")
        refusedPeerMessages = registry.makeGauge(
            name: "crm_raft_peer_messages_refused_total",
            help: "Peer messages refused before the consensus core (out of range, out of order, or not from the leader)"
        )
        refusedBusy = registry.makeGauge(
            name: "crm_raft_requests_refused_busy_total",
            help: "Requests refused at once because too many were waiting for the Raft loop")
        droppedBatches = registry.makeGauge(
            name: "crm_raft_peer_batches_dropped_total",
            help: "Batches of peer messages dropped because too many were waiting for the Raft loop")
        healthState = registry.makeGauge(name: "crm_health_state", help: "0 healthy, 1 degraded, 2 down")
        var alarms: [Alarm.Kind: Gauge] = [:]
        for kind in Alarm.Kind.allCases {
            alarms[kind] = registry.makeGauge(
                name: "crm_alarm_active", labels: [("alarm", kind.rawValue)],
                help: "1 while the alarm is raised on this member")
        }
        alarmGauges = alarms
        freeDisk = registry.makeGauge(name: "crm_disk_free_bytes", help: "Free bytes on the data directory's disk")
        storeSize = registry.makeGauge(name: "crm_store_bytes", help: "Bytes of the store's files")
        syncWorst = registry.makeGauge(
            name: "crm_fsync_worst_recent_seconds",
            help: "The slowest synced write in the health window (one in progress included)")
        stallWorst = registry.makeGauge(
            name: "crm_loop_stall_worst_recent_seconds", help: "The longest Raft or network loop stall in the last 10 s"
        )
        applyLag = registry.makeGauge(name: "crm_apply_lag_entries", help: "Committed entries not yet applied")
        deadMembers = registry.makeGauge(
            name: "crm_dead_members", help: "Members silent for longer than failover.dead_after_seconds")
        auditQueued = registry.makeGauge(
            name: "crm_audit_queue_entries", help: "Audit entries of this member's reads waiting to be written")
        auditRefused = registry.makeGauge(
            name: "crm_audit_queue_refused_total",
            help: "Reads refused UNAVAILABLE because the audit queue was full (crm.audit_queue_entries)")
        backupNewest = registry.makeGauge(
            name: "crm_backup_last_success_timestamp_seconds",
            help: "When the newest backup in this member's targets was taken (Unix time; 0: none)")
        backupDrill = registry.makeGauge(
            name: "crm_backup_drill_last_success_timestamp_seconds",
            help: "When the cluster's last restore drill passed (Unix time; 0: none), from the replicated state")
    }

    /// When the newest backup in this member's targets was taken, and the last passed drill
    /// (0: none known).
    func refresh(backupNewestMillis: UInt64?, drillMillis: UInt64?) {
        backupNewest.set(to: Double(backupNewestMillis ?? 0) / 1000)
        backupDrill.set(to: Double(drillMillis ?? 0) / 1000)
    }

    /// Mirrors the audit queue into the gauges (called before each scrape).
    func refresh(auditQueue counts: (queued: Int, refusedTotal: UInt64)) {
        auditQueued.set(to: Double(counts.queued))
        auditRefused.set(to: Double(counts.refusedTotal))
    }

    /// Mirrors the health monitor's findings into the gauges (called before each scrape).
    func refresh(_ health: HealthSnapshot) {
        healthState.set(to: health.report.state == .healthy ? 0 : health.report.state == .degraded ? 1 : 2)
        for (kind, gauge) in alarmGauges { gauge.set(to: health.alarm(kind) == nil ? 0 : 1) }
        freeDisk.set(to: Double(health.freeDiskBytes))
        storeSize.set(to: Double(health.storeBytes))
        syncWorst.set(to: Double(health.sync.worstNanoseconds) / 1e9)
        stallWorst.set(to: Double(health.worstStallMilliseconds) / 1000)
        applyLag.set(to: Double(health.applyLag))
        deadMembers.set(to: Double(health.dead.count))
    }

    /// When the member's certificate and the cluster CA expire (called before each scrape).
    func refresh(certificatesExpireAt expiries: [String: Date]) {
        for (name, date) in expiries {
            let gauge = certificateExpiry.withLock { gauges in
                if let existing = gauges[name] { return existing }
                let made = registry.makeGauge(
                    name: "crm_tls_certificate_expiry_timestamp_seconds", labels: [("certificate", name)],
                    help: "When a certificate this member presents or trusts expires (Unix time): member, ca")
                gauges[name] = made
                return made
            }
            gauge.set(to: date.timeIntervalSince1970)
        }
    }

    /// Mirrors each listener's connection counts (called before each scrape).
    func refresh(connections: [(listener: String, counts: ConnectionGuard.Counts)]) {
        for (listener, counts) in connections {
            let gauges = listenerGauges.withLock { gauges in
                if let existing = gauges[listener] { return existing }
                let labels = [("listener", listener)]
                let made = [
                    registry.makeGauge(
                        name: "crm_connections_open", labels: labels, help: "Open connections on a listener"),
                    registry.makeGauge(
                        name: "crm_connections_refused_total", labels: labels,
                        help:
                            "Connections refused at accept: the listener or the address was full of connections that had made requests"
                    ),
                    registry.makeGauge(
                        name: "crm_connections_evicted_total", labels: labels,
                        help: "Connections that had made no request, closed to make room for newer ones"),
                    registry.makeGauge(
                        name: "crm_connections_timed_out_total", labels: labels,
                        help: "Connections closed for missing the first-request, request-read or idle deadline"),
                ]
                gauges[listener] = made
                return made
            }
            for (gauge, value) in zip(gauges, [counts.open, counts.refused, counts.evicted, counts.timedOut]) {
                gauge.set(to: Double(value))
            }
        }
    }

    /// Mirrors the engine's status into the gauges (called before each scrape).
    func refresh(_ status: EngineStatus, refusedConnections: Int, peerRoundTrips: [NodeID: Duration]) {
        let roles: [Role: Double] = [.follower: 0, .preCandidate: 1, .candidate: 2, .leader: 3]
        role.set(to: roles[status.role] ?? 0)
        term.set(to: Double(status.term))
        leader.set(to: Double(status.leader))
        commitIndex.set(to: Double(status.commitIndex))
        appliedIndex.set(to: Double(status.appliedIndex))
        lastIndex.set(to: Double(status.lastIndex))
        snapshotIndex.set(to: Double(status.snapshotIndex))
        snapshotsSent.set(to: Double(status.snapshotsSent))
        snapshotsInstalled.set(to: Double(status.snapshotsInstalled))
        compactions.set(to: Double(status.compactions))
        forwardedWrites.set(to: Double(status.forwardedWrites))
        refusedPeerConnections.set(to: Double(refusedConnections))
        refusedPeerMessages.set(to: Double(status.refusedPeerMessages))
        refusedBusy.set(to: Double(status.refusedBusyRequests))
        droppedBatches.set(to: Double(status.droppedMessageBatches))
        for peer in status.voters.union(status.learners) where peer != status.id {
            let gauges = peerGauges.withLock { gauges in
                if let existing = gauges[peer] { return existing }
                let made = (
                    registry.makeGauge(
                        name: "crm_peer_round_trip_seconds", labels: [("peer", "\(peer)")],
                        help: "Latest heartbeat round trip to a peer (leader only)"),
                    registry.makeGauge(
                        name: "crm_peer_last_contact_seconds", labels: [("peer", "\(peer)")],
                        help: "Seconds since the peer was last heard from")
                )
                gauges[peer] = made
                return made
            }
            if let rtt = peerRoundTrips[peer] {
                gauges.rtt.set(to: Double(rtt.components.seconds) + Double(rtt.components.attoseconds) / 1e18)
            }
            gauges.silence.set(to: Double(status.lastContactMilliseconds[peer] ?? 0) / 1000)
        }
    }
}
