import CRMClient
import CRMProto
import Dispatch
import Foundation
import GRPCCore
import Simulation
import Synchronization

/// One line of `history.jsonl` (the format in MISSION.md): `invoke`, then `ok`, `fail` or `info`.
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
        var object: [String: Any] = ["process": process, "type": type.rawValue, "f": f, "key": key, "time": time,
                                     "value": value.map { $0 as Any } ?? NSNull()]
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

/// The drill's clients: each issues one operation at a time through a front, against a few
/// keys with skewed access (low-numbered keys are hot): gets, puts of values never written
/// before, compare-and-swaps from the last value the client saw, deletes. Outcomes are
/// recorded as they are known: `ok`, `fail` (certainly not applied), `info` (unknown: after it,
/// the client continues under a new process number).
struct Workload: Sendable {
    let clients: Int
    let keys: Int
    let fronts: [Endpoint]
    let tls: ClientTLSFiles
    let history: HistoryLog

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func run(until end: UInt64) async throws {
        let pools = try (0..<clients).map { client in
            try FrontPool(Array(fronts[(client % fronts.count)...] + fronts[..<(client % fronts.count)]), tls: tls)
        }
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask { await runClient(pools[client], until: end) }
            }
        }
        for pool in pools { await pool.close() }
    }

    private func runClient(_ pool: FrontPool, until end: UInt64) async {
        var process = history.newProcess()
        var sequence = 0
        var seen: [String: String?] = [:]
        var random = SystemRandomNumberGenerator()
        while Self.now() < end {
            sequence += 1
            let key = "k\(Int(pow(Double.random(in: 0..<1, using: &random), 2) * Double(keys)))"
            let value = "v\(process)-\(sequence)"
            let roll = Int.random(in: 0..<10, using: &random)
            let outcome: HistoryEvent.Kind
            if roll < 4 {
                outcome = await get(pool, key: key, process: process) { seen[key] = $0 }
            } else if roll < 7 {
                outcome = await put(pool, key: key, value: value, process: process)
                if outcome == .ok { seen[key] = .some(value) }
            } else if roll < 9 {
                let expected = seen[key] ?? nil
                outcome = await cas(pool, key: key, expected: expected, value: value, process: process)
                if outcome == .ok { seen[key] = .some(value) }
            } else {
                outcome = await delete(pool, key: key, process: process)
                if outcome == .ok { seen[key] = .some(nil) }
            }
            if outcome == .info { process = history.newProcess() }
        }
    }

    private static var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .seconds(6)
        return options
    }

    private func get(_ pool: FrontPool, key: String, process: Int, saw: (String?) -> Void) async -> HistoryEvent.Kind {
        history.record(HistoryEvent(process: process, type: .invoke, f: "get", key: key, value: nil, time: Self.now()))
        var request = Crm_V1_GetRequest()
        request.key = Data(key.utf8)
        do {
            let response = try await pool.get(request, options: Self.options)
            let value = response.found ? String(decoding: response.value, as: UTF8.self) : nil
            history.record(HistoryEvent(process: process, type: .ok, f: "get", key: key, value: value, time: Self.now()))
            saw(value)
            return .ok
        } catch {
            // A read that failed changed nothing.
            history.record(HistoryEvent(process: process, type: .fail, f: "get", key: key, value: nil, time: Self.now()))
            return .fail
        }
    }

    private func put(_ pool: FrontPool, key: String, value: String, process: Int) async -> HistoryEvent.Kind {
        history.record(HistoryEvent(process: process, type: .invoke, f: "put", key: key, value: value, time: Self.now()))
        var request = Crm_V1_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        let kind = await outcome { _ = try await pool.put(request, options: Self.options) }
        history.record(HistoryEvent(process: process, type: kind, f: "put", key: key, value: value, time: Self.now()))
        return kind
    }

    private func cas(_ pool: FrontPool, key: String, expected: String?, value: String, process: Int) async -> HistoryEvent.Kind {
        history.record(HistoryEvent(process: process, type: .invoke, f: "cas", key: key, value: value, expected: .some(expected), time: Self.now()))
        var request = Crm_V1_CompareAndSwapRequest()
        request.key = Data(key.utf8)
        if let expected { request.expectedValue = Data(expected.utf8) } else { request.expectAbsent = true }
        request.newValue = Data(value.utf8)
        var swapped = false
        var kind = await outcome { swapped = try await pool.compareAndSwap(request, options: Self.options).swapped }
        if kind == .ok && !swapped { kind = .fail }  // the comparison failed: certainly not applied
        history.record(HistoryEvent(process: process, type: kind, f: "cas", key: key, value: value, expected: .some(expected), time: Self.now()))
        return kind
    }

    private func delete(_ pool: FrontPool, key: String, process: Int) async -> HistoryEvent.Kind {
        history.record(HistoryEvent(process: process, type: .invoke, f: "delete", key: key, value: nil, time: Self.now()))
        var request = Crm_V1_DeleteRequest()
        request.key = Data(key.utf8)
        let kind = await outcome { _ = try await pool.delete(request, options: Self.options) }
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
