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
    static func operations(
        _ events: [HistoryEvent]
    ) -> (operations: [HistoryOperation], ok: Int, failed: Int, info: Int) {
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
                operations.append(
                    HistoryOperation(
                        client: UInt64(event.process), operation: operation, invoked: invoke.time,
                        completed: event.time, result: result))
            case .info:
                counts.info += 1
                operations.append(
                    HistoryOperation(client: UInt64(event.process), operation: operation, invoked: invoke.time))
            case .fail:
                counts.failed += 1
            case .invoke:
                break
            }
        }
        // An operation still open at the end never got an answer: indeterminate.
        for invoke in open.values {
            counts.info += 1
            let operation: KVOperation =
                invoke.f == "get" ? .get(key: invoke.key) : .put(key: invoke.key, value: invoke.value ?? "")
            if invoke.f != "get" {
                operations.append(
                    HistoryOperation(client: UInt64(invoke.process), operation: operation, invoked: invoke.time))
            }
        }
        return (operations, counts.ok, counts.failed, counts.info)
    }

    static func linearizability(_ events: [HistoryEvent]) -> (check: Verdict.Check, operations: Int) {
        let (operations, ok, failed, info) = operations(events)
        let started = Date()
        let verdict = LinearizabilityChecker().check(operations)
        let took = String(format: "%.2f s", Date().timeIntervalSince(started))
        let counts =
            "\(operations.count) operations checked (\(ok) ok, \(info) indeterminate; \(failed) failed left out) in \(took)"
        switch verdict {
        case .linearizable:
            return (.init(name: "linearizable", passed: true, detail: counts), operations.count)
        case .violation(let key, let trace):
            // The search stops at the first key without an order; a read no order can explain
            // is named from that key, or else from any other key that has one.
            var why = explain(key: key, events)
            for other in Set(events.map(\.key)).sorted() where why.isEmpty && other != key {
                why = explain(key: other, events)
            }
            return (
                .init(
                    name: "linearizable", passed: false,
                    detail: "key \(key) has no linearization; \(counts)"
                        + (why.isEmpty ? "" : "; " + why.joined(separator: "; "))
                        + "; its last operations: " + trace.suffix(6).joined(separator: " | ")),
                operations.count
            )
        case .undecided(let key, let steps):
            return (
                .init(
                    name: "linearizable", passed: false,
                    detail: "key \(key) undecided after \(steps) search steps; \(counts)"), operations.count
            )
        }
    }

    /// Every acknowledged unique write must be there at the end (its absence is a lost write);
    /// none may be there that failed or was never issued (a phantom write). Indeterminate ones
    /// may go either way, and are counted.
    static func uniqueWrites(_ counts: WorkloadLedger.Counts, present: Set<String>?) -> Verdict.Check {
        guard let present else {
            return .init(name: "no lost writes", passed: false, detail: "the unique keys could not be read back")
        }
        let lost = counts.uniqueOK.subtracting(present).sorted()
        let phantom = present.subtracting(counts.uniqueOK.union(counts.uniqueUnknown)).sorted()
        let unknownApplied = counts.uniqueUnknown.intersection(present).count
        var detail =
            "\(counts.uniqueOK.count - lost.count) of \(counts.uniqueOK.count) acknowledged unique writes present"
        detail +=
            "; \(counts.uniqueUnknown.count) indeterminate (\(unknownApplied) applied); \(counts.uniqueFailed.count) failed"
        if !lost.isEmpty { detail += "; LOST \(lost.count): " + lost.prefix(8).joined(separator: ", ") }
        if !phantom.isEmpty {
            detail +=
                "; PHANTOM \(phantom.count) (present, never acknowledged): " + phantom.prefix(8).joined(separator: ", ")
        }
        return .init(name: "no lost writes", passed: lost.isEmpty && phantom.isEmpty, detail: detail)
    }

    /// The counter holds at least every acknowledged increment and at most those plus the
    /// indeterminate ones.
    static func counter(_ counts: WorkloadLedger.Counts, final: String?, key: String) -> Verdict.Check {
        let value = final.flatMap { Int($0) } ?? 0
        let low = counts.incrementsOK, high = counts.incrementsOK + counts.incrementsUnknown
        let passed = (final == nil || Int(final!) != nil) && (low...high).contains(value)
        let detail =
            "\(key) = \(final ?? "absent") after \(low) acknowledged and \(counts.incrementsUnknown) indeterminate increments (must be \(low) to \(high))"
            + (value < low ? "; \(low - value) acknowledged increments LOST" : "")
            + (value > high ? "; \(value - high) increments from nowhere" : "")
        return .init(name: "counter", passed: passed, detail: detail)
    }

    /// Reads of `key` that no order can explain, in words: a read that returned a value (or
    /// absence) that no write still possibly current at the read's start had left. A write is
    /// certainly replaced once another acknowledged write began after it finished and finished
    /// before the read began. An indeterminate compare-and-swap may have applied at any later
    /// time, but only onto its expected value, so it explains a read only where that value
    /// was itself still possible. Up to two, the earliest first.
    static func explain(key: String, _ events: [HistoryEvent]) -> [String] {
        let (writes, reads) = writesAndReads(key: key, events)
        let origin = events.first?.time ?? 0
        func seconds(_ time: UInt64) -> String { String(format: "%.3f s", Double(time - min(time, origin)) / 1e9) }
        var lines: [String] = []
        for read in reads where lines.count < 2 {
            let finished = writes.filter { ($0.completed ?? .max) < read.invoked }
            let lastFinishedStart = finished.map(\.invoked).max()
            guard
                !possiblyCurrent(
                    read.value, read: read, writes: writes, lastFinishedStart: lastFinishedStart, visiting: [])
            else { continue }
            let latest = finished.max { $0.completed! < $1.completed! }
            lines.append(
                "get(\(key)) at \(seconds(read.invoked)) returned \(read.value ?? "nothing")"
                    + (latest.map {
                        ", though \($0.label) had been acknowledged at \(seconds($0.completed!)) and nothing since could have restored it"
                    } ?? ""))
        }
        return lines
    }

    private struct ExplainedWrite {
        var value: String?; var expected: String??; var invoked: UInt64; var completed: UInt64?; var label: String
    }
    private struct ExplainedRead { var value: String?; var invoked: UInt64; var completed: UInt64 }

    /// The writes of `key` that may have applied (acknowledged or indeterminate, including
    /// those never answered) and its acknowledged reads.
    private static func writesAndReads(key: String, _ events: [HistoryEvent]) -> ([ExplainedWrite], [ExplainedRead]) {
        var open: [Int: HistoryEvent] = [:]
        var writes: [ExplainedWrite] = []
        var reads: [ExplainedRead] = []
        func record(_ invoke: HistoryEvent, completed: UInt64?) {
            switch invoke.f {
            case "get": break
            case "delete":
                writes.append(
                    ExplainedWrite(
                        value: nil, expected: nil, invoked: invoke.time, completed: completed, label: "delete"))
            default:
                writes.append(
                    ExplainedWrite(
                        value: invoke.value, expected: invoke.f == "cas" ? invoke.expected : nil,
                        invoked: invoke.time, completed: completed, label: "\(invoke.f)(\(invoke.value ?? ""))"))
            }
        }
        for event in events where event.key == key {
            if event.type == .invoke { open[event.process] = event; continue }
            guard let invoke = open.removeValue(forKey: event.process), event.type != .fail else { continue }
            if invoke.f == "get" {
                if event.type == .ok {
                    reads.append(ExplainedRead(value: event.value, invoked: invoke.time, completed: event.time))
                }
            } else {
                record(invoke, completed: event.type == .ok ? event.time : nil)
            }
        }
        for invoke in open.values { record(invoke, completed: nil) }
        return (writes, reads)
    }

    /// Whether `value` may have been the key's value at some moment of `read`.
    /// `lastFinishedStart` is the latest start of a write acknowledged before the read began
    /// (nil: none was): every acknowledged write that finished before it is certainly replaced.
    /// `visiting` breaks cycles of compare-and-swaps; a cycle counts as possible, so no read is
    /// blamed that some order might explain.
    private static func possiblyCurrent(
        _ value: String?, read: ExplainedRead, writes: [ExplainedWrite], lastFinishedStart: UInt64?,
        visiting: Set<String?>
    ) -> Bool {
        if value == nil && lastFinishedStart == nil { return true }
        if visiting.contains(value) { return true }
        let replaced = { (write: ExplainedWrite) -> Bool in
            guard let done = write.completed, let lastFinishedStart else { return false }
            return done < lastFinishedStart
        }
        for write in writes where write.value == value && write.invoked < read.completed && !replaced(write) {
            guard write.completed == nil, let expected = write.expected else { return true }
            if possiblyCurrent(
                expected, read: read, writes: writes, lastFinishedStart: lastFinishedStart,
                visiting: visiting.union([value]))
            {
                return true
            }
        }
        return false
    }
}
