import CRMClient
import CRMProto
import Foundation

/// Tables for people, JSON for scripts.
enum Output {
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// JSON of a value built from `RecordJSON` (objects, arrays, strings, numbers, booleans).
    static func object(_ value: Any) throws {
        print(String(decoding: try RecordJSON.data(value, pretty: true), as: UTF8.self))
    }

    static func table(_ header: [String], _ rows: [[String]]) {
        let widths = header.indices.map { column in ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        print(line(header))
        for row in rows { print(line(row)) }
    }

    static func role(_ role: Crm_V1_MemberRole) -> String {
        switch role {
        case .leader: return "leader"
        case .follower: return "follower"
        case .candidate: return "candidate"
        case .preCandidate: return "pre-candidate"
        case .learner: return "learner"
        case .unknown, .UNRECOGNIZED: return "?"
        }
    }

    static func health(_ health: Crm_V1_Health) -> String {
        switch health.state {
        case .healthy: return "healthy"
        case .degraded: return "degraded"
        case .down: return "down"
        case .unknown, .UNRECOGNIZED: return "?"
        }
    }

    static func statusTable(
        _ statuses: [(target: Target, status: Crm_V1_StatusResponse?, error: String?)], cluster: Cluster
    ) {
        let leaderView = statuses.compactMap(\.status).first { $0.role == .leader }
        var rows: [[String]] = []
        for (target, status, error) in statuses {
            guard let status else {
                rows.append([
                    "\(target.id)", "unreachable", "-", "-", "-", "-", "-", "-", "-", "-", "-", "no", "-", "-",
                    target.address(.admin),
                ])
                continue
            }
            let seen = leaderView?.members.first { $0.id == status.memberID }
            rows.append([
                "\(status.memberID)", role(status.role), "\(status.term)", "\(status.leaderID)",
                "\(status.commitIndex)",
                "\(status.appliedIndex)", "\(status.firstIndex)", "\(status.lastIndex)", "\(status.snapshotIndex)",
                seen.map { "\($0.matchIndex)" } ?? "-", seen.map { "\($0.lag)" } ?? "-",
                seen.map { $0.reachable ? "yes" : "no" } ?? "yes", health(status.health), "\(status.pid)",
                target.address(.admin),
            ])
            _ = error
        }
        table(
            [
                "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "FIRST", "LAST", "SNAPSHOT", "MATCH", "LAG",
                "REACHABLE", "HEALTH", "PID", "ADMIN",
            ], rows)
        for (target, status, error) in statuses {
            if let error { print("member \(target.id) (\(target.address(.admin))): \(error)") }
            for reason in status?.health.reasons ?? [] { print("member \(status!.memberID): \(reason)") }
            for alarm in status?.alarms ?? [] {
                print("member \(status!.memberID): ALARM \(alarmName(alarm.kind)): \(alarm.reason)")
            }
        }
        // Dead members as the leader (or any member) reports them, once each, with the fix.
        var reported: Set<UInt64> = []
        for status in ([leaderView].compactMap { $0 } + statuses.compactMap(\.status)) {
            for dead in status.deadMembers where reported.insert(dead.id).inserted {
                print(
                    "member \(dead.id) is dead: silent for \(dead.silentMs / 1000) s (failover.dead_after_seconds). Replace it:"
                )
                for command in dead.replaceCommands { print("  \(command)") }
            }
        }
    }

    static func alarmName(_ kind: Crm_V1_AlarmKind) -> String {
        switch kind {
        case .nospace: return "NOSPACE"
        case .corrupt: return "CORRUPT"
        case .crmkey: return "CRMKEY"
        case .tamper: return "TAMPER"
        case .authAttack: return "AUTH_ATTACK"
        case .clockSkew: return "CLOCK_SKEW"
        case .auditBacklog: return "AUDIT_BACKLOG"
        case .backupStale: return "BACKUP_STALE"
        case .backupGap: return "BACKUP_GAP"
        case .unknown, .UNRECOGNIZED: return "UNKNOWN"
        }
    }

    static func memberTable(_ members: [Crm_V1_MemberStatus]) {
        table(
            ["ID", "VOTER", "ROLE", "MATCH", "LAG", "REACHABLE", "PEER", "CLIENT", "ADMIN"],
            members.map {
                [
                    "\($0.id)", $0.voter ? "yes" : "no", role($0.role), "\($0.matchIndex)", "\($0.lag)",
                    $0.reachable ? "yes" : "no",
                    $0.endpoints.peer, $0.endpoints.client, $0.endpoints.admin,
                ]
            })
    }
}

struct MemberJSON: Encodable {
    var id: UInt64
    var voter: Bool
    var role: String
    var match_index: UInt64
    var lag: UInt64
    var reachable: Bool
    var pid: UInt64
    var endpoints: [String: String]

    init(_ member: Crm_V1_MemberStatus) {
        id = member.id
        voter = member.voter
        role = Output.role(member.role)
        match_index = member.matchIndex
        lag = member.lag
        reachable = member.reachable
        pid = member.pid
        endpoints = [
            "peer": member.endpoints.peer, "client": member.endpoints.client, "admin": member.endpoints.admin,
            "health": member.endpoints.health,
        ]
    }
}

/// `crmctl status --json`: every member as it reports itself, with its process id and endpoints.
struct StatusReport: Encodable {
    struct Member: Encodable {
        var id: UInt64
        var reachable: Bool
        var error: String?
        var role: String?
        var pid: UInt64?
        var endpoints: [String: String]
        var term: UInt64?
        var leader_id: UInt64?
        var commit_index: UInt64?
        var applied_index: UInt64?
        var first_index: UInt64?
        var last_index: UInt64?
        var snapshot_index: UInt64?
        var match_index: UInt64?
        var lag: UInt64?
        var health: String?
        var health_reasons: [String]?
        var state_hash: String?
        var alarms: [AlarmJSON]?
        var dead_members: [DeadMemberJSON]?
    }

    var leader_id: UInt64?
    var members: [Member]

    init(statuses: [(target: Target, status: Crm_V1_StatusResponse?, error: String?)], cluster: Cluster) {
        let leaderView = statuses.compactMap(\.status).first { $0.role == .leader }
        leader_id = leaderView?.memberID
        members = statuses.map { target, status, error in
            var endpoints = ["client": target.address(.client), "admin": target.address(.admin)]
            if let peer = target.endpoints?.peer { endpoints["peer"] = peer }
            if let health = target.endpoints?.health { endpoints["health"] = health }
            guard let status else { return Member(id: target.id, reachable: false, error: error, endpoints: endpoints) }
            let seen = leaderView?.members.first { $0.id == status.memberID }
            return Member(
                id: status.memberID, reachable: true, role: Output.role(status.role), pid: status.pid,
                endpoints: endpoints,
                term: status.term, leader_id: status.leaderID, commit_index: status.commitIndex,
                applied_index: status.appliedIndex, first_index: status.firstIndex, last_index: status.lastIndex,
                snapshot_index: status.snapshotIndex, match_index: seen?.matchIndex, lag: seen?.lag,
                health: Output.health(status.health), health_reasons: status.health.reasons,
                state_hash: status.stateHash.isEmpty ? nil : status.stateHash,
                alarms: status.alarms.map(AlarmJSON.init), dead_members: status.deadMembers.map(DeadMemberJSON.init))
        }
    }
}

struct AlarmJSON: Encodable {
    var alarm: String
    var member_id: UInt64
    var raised_at_ms: UInt64
    var reason: String

    init(_ alarm: Crm_V1_Alarm) {
        self.alarm = Output.alarmName(alarm.kind)
        member_id = alarm.memberID
        raised_at_ms = alarm.raisedAtMs
        reason = alarm.reason
    }
}

struct DeadMemberJSON: Encodable {
    var id: UInt64
    var silent_ms: UInt64
    var replace_commands: [String]

    init(_ dead: Crm_V1_DeadMember) {
        id = dead.id
        silent_ms = dead.silentMs
        replace_commands = dead.replaceCommands
    }
}
