import Foundation
import Yams

/// A chaos drill, read from a YAML file under `chaos/`: the cluster, the workload, the faults
/// and when they happen, and how soon the cluster must serve again after healing.
struct Scenario: Codable, Sendable {
    struct Fault: Codable, Sendable {
        enum Kind: String, Codable, Sendable {
            /// kill -9 of the target.
            case kill
            /// SIGSTOP of the target, SIGCONT after `duration_s` (or at the heal).
            case pause
            /// Starts again every member killed so far (from its data directory).
            case restart
        }

        enum Target: String, Codable, Sendable {
            case leader, follower, random
        }

        var atSeconds: Double
        var kind: Kind
        var target: Target?
        var durationSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case kind, target
            case atSeconds = "at_s"
            case durationSeconds = "duration_s"
        }
    }

    var name: String
    var description: String?
    var nodes: Int
    var durationSeconds: Double
    var clients: Int
    var keys: Int
    var faults: [Fault]
    /// After the heal (every fault undone), a write must succeed within this long.
    var recoveryBoundSeconds: Double

    enum CodingKeys: String, CodingKey {
        case name, description, nodes, clients, keys, faults
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
        if !(0.1...120).contains(recoveryBoundSeconds) { problems.append("recovery_bound_s must be 0.1 to 120") }
        for (index, fault) in faults.enumerated() {
            if fault.atSeconds < 0 || fault.atSeconds >= durationSeconds { problems.append("faults[\(index)].at_s must fall inside the run") }
            if fault.kind != .restart && fault.target == nil { problems.append("faults[\(index)] (\(fault.kind.rawValue)) needs a target") }
            if fault.kind == .pause, let duration = fault.durationSeconds, duration <= 0 { problems.append("faults[\(index)].duration_s must be positive") }
        }
        return problems
    }
}

struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
