import CRMClient
import CRMProto
import Dispatch
import Foundation
import GRPCCore
import Simulation
import Synchronization

/// One line of `history.jsonl` (the format is in the README, Chaos drills): `invoke`, then `ok`,
/// `fail` or `info`.
struct HistoryEvent: Sendable {
    enum Kind: String, Sendable { case invoke, ok, fail, info }

    var process: Int
    var type: Kind
    var f: String
    var key: String
    /// The value written, or for an ok `get` the value read (nil: absent).
    var value: String?
    /// For `cas`: the value required (nil: absent).
    var expected: String??
    var time: UInt64

    var json: String {
        var object: [String: Any] = [
            "process": process, "type": type.rawValue, "f": f, "key": key, "time": time,
            "value": value.map { $0 as Any } ?? NSNull(),
        ]
        if let expected { object["expected"] = expected.map { $0 as Any } ?? NSNull() }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Every event of a drill, in the order they happened.
final class HistoryLog: Sendable {
    private let events = Mutex<[HistoryEvent]>([])
    private let nextProcess = Atomic<Int>(1)

    func newProcess() -> Int { nextProcess.wrappingAdd(1, ordering: .relaxed).oldValue }

    func record(_ event: HistoryEvent) { events.withLock { $0.append(event) } }

    var all: [HistoryEvent] { events.withLock { $0 } }
}

/// What the workload's own bookkeeping knows, for the checks that need more than the history:
/// the CAS counter's increments and the unique writes.
final class WorkloadLedger: Sendable {
    struct Counts: Sendable {
        /// Increments of the counter acknowledged, and those whose outcome is unknown.
        var incrementsOK = 0
        var incrementsUnknown = 0
        /// Unique keys (written once, never again) by outcome.
        var uniqueOK: Set<String> = []
        var uniqueUnknown: Set<String> = []
        var uniqueFailed: Set<String> = []
    }

    private let counts = Mutex(Counts())

    func update(_ body: (inout Counts) -> Void) { counts.withLock { body(&$0) } }
    var snapshot: Counts { counts.withLock { $0 } }
}

/// The drill's clients: each issues one operation at a time through a front. Most go to a few
/// keys with skewed access (low-numbered keys are hot): gets, puts of values never written
/// before, compare-and-swaps from the last value the client saw, deletes. Some increment one
/// counter by read-then-CAS (it must never lose an increment), and some write a key of their
/// own exactly once (a unique write whose absence at the end proves a lost write). Outcomes are
/// recorded as they are known: `ok`, `fail` (certainly not applied), `info` (unknown: after it,
/// the client continues under a new process number).
struct Workload: Sendable {
    /// Which clients go where while a fault pins some of them to one front (see
    /// `Scenario.Fault.pinClients`): the first `count` use only front `index`, the rest avoid it.
    final class Pinning: Sendable {
        private let state = Mutex<(index: Int, count: Int)?>(nil)
        func pin(front index: Int, clients count: Int) { state.withLock { $0 = (index, count) } }
        func release() { state.withLock { $0 = nil } }
        var current: (index: Int, count: Int)? { state.withLock { $0 } }
    }

    let clients: Int
    /// Put before every key, so that a drill on an existing cluster starts from keys nobody wrote.
    let namespace: String
    let keys: Int
    let fronts: [Endpoint]
    let tls: ClientTLSFiles
    let history: HistoryLog
    let ledger: WorkloadLedger
    /// How long one operation may take before the client gives up on it.
    var timeout: Duration = .seconds(6)
    let pinning = Pinning()

    var counterKey: String { namespace + "counter" }
    var uniquePrefix: String { namespace + "u/" }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// One client's ways to the cluster: its usual rotation of fronts, one front alone (when
    /// pinned there), and the rotation without one front (when others are pinned there).
    struct Routes: Sendable {
        let usual: FrontPool
        let only: [FrontPool]
        let avoiding: [FrontPool]

        func pool(for client: Int, _ pinning: (index: Int, count: Int)?) -> FrontPool {
            guard let pinning else { return usual }
            return client < pinning.count ? only[pinning.index] : avoiding[pinning.index]
        }

        func close() async {
            for pool in [usual] + only + avoiding { await pool.close() }
        }
    }

    func run(until end: UInt64) async throws {
        let routes = try (0..<clients).map { client in
            let rotation = Array(fronts[(client % fronts.count)...] + fronts[..<(client % fronts.count)])
            return Routes(
                usual: try FrontPool(rotation, tls: tls),
                only: try fronts.map { try FrontPool([$0], tls: tls) },
                avoiding: try fronts.map { excluded in try FrontPool(rotation.filter { $0 != excluded }, tls: tls) })
        }
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask { await runClient(client, routes[client], until: end) }
            }
        }
        for route in routes { await route.close() }
    }

    private func runClient(_ client: Int, _ routes: Routes, until end: UInt64) async {
        var process = history.newProcess()
        var sequence = 0
        var seen: [String: String?] = [:]
        var random = SystemRandomNumberGenerator()
        while Self.now() < end {
            let pool = routes.pool(for: client, pinning.current)
            sequence += 1
            let key = namespace + "k\(Int(pow(Double.random(in: 0..<1, using: &random), 2) * Double(keys)))"
            let value = "v\(process)-\(sequence)"
            let roll = Int.random(in: 0..<20, using: &random)
            var outcome: HistoryEvent.Kind
            if roll < 7 {
                outcome = await get(pool, key: key, process: process) { seen[key] = $0 }
            } else if roll < 12 {
                outcome = await put(pool, key: key, value: value, process: process)
                if outcome == .ok { seen[key] = .some(value) }
            } else if roll < 15 {
                let expected = seen[key] ?? nil
                outcome = await cas(pool, key: key, expected: expected, value: value, process: process)
                if outcome == .ok { seen[key] = .some(value) }
            } else if roll < 17 {
                outcome = await delete(pool, key: key, process: process)
                if outcome == .ok { seen[key] = .some(nil) }
            } else if roll < 18 {
                let unique = uniquePrefix + "\(process)-\(sequence)"
                outcome = await put(pool, key: unique, value: value, process: process)
                ledger.update { counts in
                    switch outcome {
                    case .ok: counts.uniqueOK.insert(unique)
                    case .fail: counts.uniqueFailed.insert(unique)
                    default: counts.uniqueUnknown.insert(unique)
                    }
                }
            } else {
                outcome = await increment(pool, process: process)
            }
            if outcome == .info { process = history.newProcess() }
        }
    }

    /// Reads the counter, then swaps it for one more; a swap that lost the race is simply not an
    /// increment. Every step is in the history like any other operation.
    private func increment(_ pool: FrontPool, process: Int) async -> HistoryEvent.Kind {
        var current: String?
        let read = await get(pool, key: counterKey, process: process) { current = $0 }
        guard read == .ok else { return read }
        let next = String((current.flatMap { Int($0) } ?? 0) + 1)
        let outcome = await cas(pool, key: counterKey, expected: current, value: next, process: process)
        ledger.update { counts in
            if outcome == .ok { counts.incrementsOK += 1 }
            if outcome == .info { counts.incrementsUnknown += 1 }
        }
        return outcome
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        return options
    }

    private func get(_ pool: FrontPool, key: String, process: Int, saw: (String?) -> Void) async -> HistoryEvent.Kind {
        history.record(HistoryEvent(process: process, type: .invoke, f: "get", key: key, value: nil, time: Self.now()))
        var request = Crm_V1_GetRequest()
        request.key = Data(key.utf8)
        do {
            let response = try await pool.get(request, options: options)
            let value = response.found ? String(decoding: response.value, as: UTF8.self) : nil
            history.record(
                HistoryEvent(process: process, type: .ok, f: "get", key: key, value: value, time: Self.now()))
            saw(value)
            return .ok
        } catch {
            // A read that failed changed nothing.
            history.record(
                HistoryEvent(process: process, type: .fail, f: "get", key: key, value: nil, time: Self.now()))
            return .fail
        }
    }

    private func put(_ pool: FrontPool, key: String, value: String, process: Int) async -> HistoryEvent.Kind {
        history.record(
            HistoryEvent(process: process, type: .invoke, f: "put", key: key, value: value, time: Self.now()))
        var request = Crm_V1_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        let kind = await outcome { _ = try await pool.put(request, options: options) }
        history.record(HistoryEvent(process: process, type: kind, f: "put", key: key, value: value, time: Self.now()))
        return kind
    }

    private func cas(
        _ pool: FrontPool, key: String, expected: String?, value: String, process: Int
    ) async -> HistoryEvent.Kind {
        history.record(
            HistoryEvent(
                process: process, type: .invoke, f: "cas", key: key, value: value, expected: .some(expected),
                time: Self.now()))
        var request = Crm_V1_CompareAndSwapRequest()
        request.key = Data(key.utf8)
        if let expected { request.expectedValue = Data(expected.utf8) } else { request.expectAbsent = true }
        request.newValue = Data(value.utf8)
        var swapped = false
        var kind = await outcome { swapped = try await pool.compareAndSwap(request, options: options).swapped }
        if kind == .ok && !swapped { kind = .fail } // the comparison failed: certainly not applied
        history.record(
            HistoryEvent(
                process: process, type: kind, f: "cas", key: key, value: value, expected: .some(expected),
                time: Self.now()))
        return kind
    }

    private func delete(_ pool: FrontPool, key: String, process: Int) async -> HistoryEvent.Kind {
        history.record(
            HistoryEvent(process: process, type: .invoke, f: "delete", key: key, value: nil, time: Self.now()))
        var request = Crm_V1_DeleteRequest()
        request.key = Data(key.utf8)
        let kind = await outcome { _ = try await pool.delete(request, options: options) }
        history.record(HistoryEvent(process: process, type: kind, f: "delete", key: key, value: nil, time: Self.now()))
        return kind
    }

    /// ok, or for an error: `fail` when the cluster certainly did not apply the write (it was
    /// refused, or invalid), `info` otherwise.
    private func outcome(_ call: () async throws -> Void) async -> HistoryEvent.Kind {
        do {
            try await call()
            return .ok
        } catch let error as RPCError {
            switch error.code {
            case .invalidArgument, .failedPrecondition, .permissionDenied, .unauthenticated, .notFound:
                return .fail
            default:
                return error.metadata[stringValues: "crm-refused"].contains { _ in true } ? .fail : .info
            }
        } catch {
            return .info
        }
    }
}
