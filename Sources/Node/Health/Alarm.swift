import Foundation
import Raft

/// A typed alarm a member raises about itself. Alarms are on by default and shown by
/// `crmctl status`, `crmctl alarms`, `/readyz` and `/metrics`.
public struct Alarm: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// Free disk space is below the reserve or the store is over its quota: writes that add
        /// data are refused (reads and deletes are served) until space returns.
        case noSpace = "NOSPACE"
        /// An integrity check found damaged data: the member serves no data until repaired.
        case corrupt = "CORRUPT"
        /// The CRM key-encryption key differs from the cluster's: no CRM call is served (the
        /// KV API is) until the member is given the cluster's `crm.key_file` and restarted.
        case crmKey = "CRMKEY"
        /// This member's audit trail differs from the cluster's (a checkpoint found an entry
        /// changed, missing or out of line): it serves no data and gives up leadership until it
        /// is re-added from a snapshot.
        case tamper = "TAMPER"
        /// The cluster's failed sign-ins in the last minute passed
        /// `crm.auth_attack_failures_per_minute` (raised by the leader, which decides every
        /// sign-in; cleared a minute after the rate falls back).
        case authAttack = "AUTH_ATTACK"
        /// This member's wall clock differs from most of its peers' by more than
        /// `HealthMonitor.clockSkewBoundMillis`: session, sign-in and alert times are off.
        case clockSkew = "CLOCK_SKEW"
        /// This member's queue of audit entries waiting to be written filled within the last
        /// minute (`crm.audit_queue_entries`): the reads it refused meanwhile released nothing.
        case auditBacklog = "AUDIT_BACKLOG"
        /// On the leader with a backup schedule: no backup in its targets for two intervals
        /// (`backup.every_hours`).
        case backupStale = "BACKUP_STALE"
        /// Log entries left a member's log before the leader archived them (the archiver fell
        /// `backup.max_archive_lag_entries` behind, or cannot write): point-in-time recovery
        /// cannot reach past the gap until the next full backup, which clears it.
        case backupGap = "BACKUP_GAP"

        /// Whether the member serves as before while it stands (it only tells the operator).
        public var isAdvisory: Bool {
            switch self {
            case .authAttack, .clockSkew, .auditBacklog, .backupStale, .backupGap: true
            case .noSpace, .corrupt, .crmKey, .tamper: false
            }
        }
    }

    public var kind: Kind
    public var memberID: NodeID
    public var raisedAt: Date
    public var reason: String

    public var description: String { "\(kind.rawValue) on member \(memberID): \(reason)" }
}

/// A member that has not been heard from for longer than `failover.dead_after_seconds`, with
/// the commands that replace it.
public struct DeadMember: Sendable, Equatable {
    public var id: NodeID
    public var silentMilliseconds: UInt64
    public var replaceCommands: [String]

    /// Add a learner, let it catch up, promote it, then remove the dead member: the voter
    /// count never drops while the replacement is on its way.
    static func commands(replacing dead: NodeID, with spare: MemberEndpoints?) -> [String] {
        let add =
            spare.map {
                "crmctl members add-learner \($0.id) --peer \($0.peer) --client \($0.client) --admin \($0.admin)"
            }
            ?? "crmctl members add-learner <new-id> --peer <host:port> --client <host:port> --admin <host:port>"
        let id = spare.map { "\($0.id)" } ?? "<new-id>"
        return [
            add,
            "crmctl members list   # wait until member \(id) shows lag 0",
            "crmctl members promote \(id)",
            "crmctl members remove \(dead)",
        ]
    }
}
