import FaultFile
import Foundation
import Yams

/// A chaos drill, read from a YAML file under `chaos/`: the cluster, the workload, the faults
/// and when they happen, and how soon the cluster must serve again after healing.
struct Scenario: Codable, Sendable {
    struct Fault: Codable, Sendable {
        enum Kind: String, Codable, Sendable, CaseIterable {
            /// kill -9 of the target (`count` members at once).
            case kill
            /// SIGSTOP of the target, SIGCONT after `duration_s` (or at the heal).
            case pause
            /// Starts again every member killed so far (from its data directory).
            case restart
            /// Cuts links between members (`shape`), through the proxies the drill inserts.
            case partition
            /// Slows the target's links both ways: `delay_ms`, `jitter_ms`, `loss_percent`.
            case network
            /// Every synced write of the target waits `delay_ms` longer (fault hook).
            case slowFsync = "slow-fsync"
            /// The target's disk reports no free space (fault hook).
            case diskFull = "disk-full"
            /// The target's wall clock jumps by `offset_s` (fault hook).
            case clockJump = "clock-jump"
            /// The target is stopped (kill -9, after a flush for a table file), bytes are flipped in
            /// one of its files (`file`: `state` or `log` table, or the `wal`), and it is started
            /// again: it must notice and serve nothing.
            case damage
            /// One stored audit entry of the target (a follower) is rewritten through the fault
            /// hook: it must raise TAMPER, serve no data and be named by `audit verify`; a later
            /// `repair` re-adds it from a snapshot.
            case auditTamper = "audit-tamper"
            /// Credential stuffing through an attacker's application at every front, each
            /// attempt from another address: no account opens, AUTH_ATTACK is raised and the
            /// application is blocked, and the workload's user still signs in.
            case credentialStuffing = "credential-stuffing"
            /// Password spraying from one network through every front: the network is refused
            /// at every front (even the right password), other networks are not.
            case passwordSpraying = "password-spraying"
            /// A user with a second factor: one code sent with two tickets through two fronts at
            /// once opens one session.
            case totpReplay = "totp-replay"
            /// `crmctl audit pull --follow` runs from here to the end; every entry must reach its
            /// copy and be acknowledged, whatever the faults did.
            case auditCollector = "audit-collector"
            /// Every damaged member is repaired from the cluster: removed, emptied, re-added as a
            /// learner that catches up by snapshot, promoted.
            case repair
            /// Undoes every network, disk and clock fault and resumes the paused (kills stay).
            case heal
        }

        enum Target: String, Codable, Sendable {
            case leader, follower, random, all
        }

        enum Shape: String, Codable, Sendable {
            /// The target is cut off from every other member.
            case isolate
            /// The target and as few others as make a minority, against the majority.
            case minority
            /// Two halves that cannot talk, and one member (not the target) that talks to both.
            case bridge
            /// The target's messages to the others are lost; theirs to it arrive.
            case oneWay = "one-way"
        }

        enum DamagedFile: String, Codable, Sendable {
            /// A table file of the state machine.
            case state
            /// A table file of the Raft log.
            case log
            /// RocksDB's write-ahead log (not flushed first: it holds the latest writes).
            case wal
        }

        var atSeconds: Double
        var kind: Kind
        var target: Target?
        /// How many members a kill takes at once (default 1).
        var count: Int?
        var durationSeconds: Double?
        var shape: Shape?
        var delayMilliseconds: Int?
        var jitterMilliseconds: Int?
        var lossPercent: Double?
        var offsetSeconds: Double?
        var file: DamagedFile?
        /// For a partition: this many clients use only the target's front while it lasts (the
        /// rest avoid it), so that every run reads through the cut-off side. A planted
        /// stale-read bug is then caught in every run instead of when clients happen to go there.
        var pinClients: Int?

        enum CodingKeys: String, CodingKey {
            case kind, target, count, shape, file
            case atSeconds = "at_s"
            case durationSeconds = "duration_s"
            case delayMilliseconds = "delay_ms"
            case jitterMilliseconds = "jitter_ms"
            case lossPercent = "loss_percent"
            case offsetSeconds = "offset_s"
            case pinClients = "pin_clients"
        }

        /// Faults that need the proxies between members.
        var needsProxies: Bool { kind == .partition || kind == .network }
        /// Faults that need the members' test-only fault hook (debug builds).
        var needsFaultHook: Bool { [.slowFsync, .diskFull, .clockJump, .auditTamper].contains(kind) }
        /// Attacks on sign-in (they need the records workload's signed-in CRM).
        var isSignInAttack: Bool { [.credentialStuffing, .passwordSpraying, .totpReplay].contains(kind) }
        /// Faults that are undone after `duration_s` or at the heal.
        var isTemporary: Bool { [.pause, .partition, .network, .slowFsync, .diskFull, .clockJump].contains(kind) }

        func problems(at index: Int, nodes: Int, duration: Double) -> [String] {
            var problems: [String] = []
            let name = "faults[\(index)] (\(kind.rawValue))"
            if atSeconds < 0 || atSeconds >= duration { problems.append("\(name): at_s must fall inside the run") }
            if kind == .auditTamper && target != .follower { problems.append("\(name): the target is a follower") }
            let untargeted: [Kind] = [
                .restart, .repair, .heal, .credentialStuffing, .passwordSpraying, .totpReplay, .auditCollector,
            ]
            if !untargeted.contains(kind) && target == nil {
                problems.append("\(name) needs a target")
            }
            if target == .all && ![.network, .slowFsync, .clockJump].contains(kind) {
                problems.append("\(name): target all is for network, slow-fsync and clock-jump")
            }
            if let count, !(1...(nodes - 1) / 2 + 1).contains(count) || (count > 1 && kind != .kill) {
                problems.append("\(name): count is for kill, 1 to \((nodes - 1) / 2 + 1)")
            }
            if let durationSeconds, durationSeconds <= 0 || !isTemporary {
                problems.append("\(name): duration_s must be positive, and only temporary faults have one")
            }
            if kind == .partition && shape == nil {
                problems.append("\(name) needs a shape: isolate, minority, bridge or one-way")
            }
            if kind == .network && (delayMilliseconds ?? 0) <= 0 && (lossPercent ?? 0) <= 0 {
                problems.append("\(name) needs delay_ms or loss_percent")
            }
            if let loss = lossPercent, !(0...100).contains(loss) {
                problems.append("\(name): loss_percent must be 0 to 100")
            }
            if kind == .slowFsync && !(1...10_000).contains(delayMilliseconds ?? 0) {
                problems.append("\(name): delay_ms must be 1 to 10000")
            }
            if kind == .clockJump && (offsetSeconds ?? 0) == 0 { problems.append("\(name) needs a non-zero offset_s") }
            if kind == .damage && file == nil { problems.append("\(name) needs a file: state, log or wal") }
            if let pin = pinClients, kind != .partition || pin < 1 {
                problems.append("\(name): pin_clients is for partitions, at least 1")
            }
            return problems
        }
    }

    /// A bug to switch on in every member for the whole drill (test-only fault hook), to show
    /// that the drill catches it: `stale_reads` or `ack_before_commit`.
    var plantedBug: String?

    var name: String
    var description: String?
    var nodes: Int
    var durationSeconds: Double
    var clients: Int
    var keys: Int
    /// Clients of the records workload that run beside the KV clients (0: none).
    var recordClients: Int?
    /// Lines no member may log during the drill (plain substrings), e.g. that sessions expired.
    var logsMustNotContain: [String]?
    /// How long a client waits for one operation before giving up on it (an `info`); default 6 s.
    var clientTimeoutSeconds: Double?
    var faults: [Fault]
    /// After the heal (every fault undone), a write must succeed within this long.
    var recoveryBoundSeconds: Double

    enum CodingKeys: String, CodingKey {
        case name, description, nodes, clients, keys, faults
        case plantedBug = "planted_bug"
        case recordClients = "record_clients"
        case clientTimeoutSeconds = "client_timeout_s"
        case logsMustNotContain = "logs_must_not_contain"
        case durationSeconds = "duration_s"
        case recoveryBoundSeconds = "recovery_bound_s"
    }

    static func load(_ path: String) throws -> Scenario {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ChaosError("cannot read the scenario \(path): \(error.localizedDescription)")
        }
        let scenario: Scenario
        do {
            scenario = try YAMLDecoder().decode(Scenario.self, from: text)
        } catch {
            throw ChaosError("\(path) is not a valid scenario: \(error)")
        }
        let problems = scenario.problems()
        guard problems.isEmpty else { throw ChaosError("\(path): " + problems.joined(separator: "; ")) }
        return scenario
    }

    func problems() -> [String] {
        var problems: [String] = []
        if ![3, 5].contains(nodes) { problems.append("nodes must be 3 or 5") }
        if !(1...600).contains(durationSeconds) { problems.append("duration_s must be 1 to 600") }
        if !(1...256).contains(clients) { problems.append("clients must be 1 to 256") }
        if !(1...100_000).contains(keys) { problems.append("keys must be 1 to 100000") }
        if let recordClients, !(0...64).contains(recordClients) { problems.append("record_clients must be 0 to 64") }
        if let timeout = clientTimeoutSeconds, !(0.1...60).contains(timeout) {
            problems.append("client_timeout_s must be 0.1 to 60")
        }
        if !(0.1...120).contains(recoveryBoundSeconds) { problems.append("recovery_bound_s must be 0.1 to 120") }
        for (index, fault) in faults.enumerated() {
            problems += fault.problems(at: index, nodes: nodes, duration: durationSeconds)
            if let pin = fault.pinClients, pin >= clients {
                problems.append(
                    "fault \(index + 1): pin_clients must leave at least one of the \(clients) clients free")
            }
        }
        let needsCRM: [Fault.Kind] = [.auditTamper, .auditCollector]
        if faults.contains(where: { $0.isSignInAttack || needsCRM.contains($0.kind) }), (recordClients ?? 0) == 0 {
            problems.append("sign-in attacks and audit-tamper need record_clients (a signed-in CRM writing entries)")
        }
        if let plantedBug, DrillBug(rawValue: plantedBug) == nil {
            problems.append("planted_bug must be one of \(DrillBug.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return problems
    }

    var needsProxies: Bool { faults.contains(where: \.needsProxies) }
    var needsFaultHook: Bool { plantedBug != nil || faults.contains(where: \.needsFaultHook) }
}

struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
