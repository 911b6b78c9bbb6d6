import Foundation
import Simulation

/// The checks a drill must pass, each with its figures.
struct Verdict: Sendable {
    struct Check: Sendable {
        var name: String
        var passed: Bool
        var detail: String
    }

    var checks: [Check] = []
    /// The longest wait for an acknowledged write after a fault or the heal.
    var worstUnavailabilitySeconds: Double?
    /// Operations the linearizability check took in.
    var operationsChecked = 0
    var passed: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }
}

enum Judge {
    /// The history as the linearizability checker takes it: ok operations with their results,
    /// info ones as indeterminate (they may have applied at any time after the invocation);
    /// failed ones are left out (they certainly did not apply).
    static func operations(_ events: [HistoryEvent]) -> (operations: [HistoryOperation], ok: Int, failed: Int, info: Int) {
        var open: [Int: HistoryEvent] = [:]
        var operations: [HistoryOperation] = []
        var counts = (ok: 0, failed: 0, info: 0)
        for event in events {
            if event.type == .invoke {
                precondition(open[event.process] == nil, "process \(event.process) invoked twice without an outcome")
                open[event.process] = event
                continue
            }
            guard let invoke = open.removeValue(forKey: event.process) else { continue }
            let operation: KVOperation
            switch invoke.f {
            case "put": operation = .put(key: invoke.key, value: invoke.value ?? "")
            case "get": operation = .get(key: invoke.key)
            case "delete": operation = .delete(key: invoke.key)
            default: operation = .cas(key: invoke.key, expected: invoke.expected ?? nil, new: invoke.value ?? "")
            }
            switch event.type {
            case .ok:
                counts.ok += 1
                let result: KVResult
                switch operation {
                case .get: result = .value(event.value)
                case .cas: result = .swapped(true)
                default: result = .done
                }
                operations.append(HistoryOperation(client: UInt64(event.process), operation: operation, invoked: invoke.time,
                                                   completed: event.time, result: result))
            case .info:
                counts.info += 1
                operations.append(HistoryOperation(client: UInt64(event.process), operation: operation, invoked: invoke.time))
            case .fail:
                counts.failed += 1
            case .invoke:
                break
            }
        }
        // An operation still open at the end never got an answer: indeterminate.
        for invoke in open.values {
            counts.info += 1
            let operation: KVOperation = invoke.f == "get" ? .get(key: invoke.key) : .put(key: invoke.key, value: invoke.value ?? "")
            if invoke.f != "get" { operations.append(HistoryOperation(client: UInt64(invoke.process), operation: operation, invoked: invoke.time)) }
        }
        return (operations, counts.ok, counts.failed, counts.info)
    }

    static func linearizability(_ events: [HistoryEvent]) -> (check: Verdict.Check, operations: Int) {
        let (operations, ok, failed, info) = operations(events)
        let started = Date()
        let verdict = LinearizabilityChecker().check(operations)
        let took = String(format: "%.2f s", Date().timeIntervalSince(started))
        let counts = "\(operations.count) operations checked (\(ok) ok, \(info) indeterminate; \(failed) failed left out) in \(took)"
        switch verdict {
        case .linearizable:
            return (.init(name: "linearizable", passed: true, detail: counts), operations.count)
        case .violation(let key, let trace):
            return (.init(name: "linearizable", passed: false,
                          detail: "key \(key) has no linearization; \(counts); its operations: " + trace.suffix(12).joined(separator: " | ")),
                    operations.count)
        case .undecided(let key, let steps):
            return (.init(name: "linearizable", passed: false, detail: "key \(key) undecided after \(steps) search steps; \(counts)"), operations.count)
        }
    }
}
