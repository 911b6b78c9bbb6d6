import CRMClient
import CRMProto
import EtcdProto
import Foundation
import GRPCCore
import Histogram

#if canImport(Glibc)
import Glibc
#endif

/// One system's way to send the race's two operations over one connection.
protocol RaceConnection: Sendable {
    func put(key: Data, value: Data, options: CallOptions) async throws
    /// A linearizable read of one key.
    func get(key: Data, options: CallOptions) async throws
    func close() async
}

extension MemberConnection: RaceConnection {
    func put(key: Data, value: Data, options: CallOptions) async throws {
        var request = Crm_V1_PutRequest()
        request.key = key
        request.value = value
        _ = try await kv.put(request, options: options)
    }

    func get(key: Data, options: CallOptions) async throws {
        var request = Crm_V1_GetRequest()
        request.key = key
        request.consistency = .linearizable
        _ = try await kv.get(request, options: options)
    }
}

extension EtcdConnection: RaceConnection {
    func put(key: Data, value: Data, options: CallOptions) async throws {
        var request = Etcdserverpb_PutRequest()
        request.key = key
        request.value = value
        _ = try await kv.put(request, options: options)
    }

    func get(key: Data, options: CallOptions) async throws {
        var request = Etcdserverpb_RangeRequest()
        request.key = key
        _ = try await kv.range(request, options: options)
    }

    func close() async { shutdown() }
}

enum RaceOperation: String, CaseIterable, Sendable {
    case put, get
}

/// What one closed-loop round measured.
struct RoundResult: Sendable {
    var operations = 0
    var errors = 0
    var seconds: Double = 0
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    /// CPU seconds in the measured window: the system's servers, this process, the whole machine.
    var serverCPU: Double = 0
    var loadCPU: Double = 0
    var machineCPU: Double = 0

    var perSecond: Double { Double(operations) / seconds }
    /// What the rest of the machine used: neither this system's servers nor the load generator.
    var otherCPU: Double { max(machineCPU - serverCPU - loadCPU, 0) }
    func milliseconds(_ percentile: Double) -> Double { Double(histogram.valueAtPercentile(percentile)) / 1000 }

    mutating func merge(_ other: RoundResult) {
        operations += other.operations
        errors += other.errors
        histogram.add(other.histogram)
    }
}

/// Closed-loop load: `clients` tasks share the connections, each sends one request, waits for
/// the answer and sends the next; only the window after the warm-up is measured.
enum RaceLoad {
    static func key(_ index: Int) -> Data { Data(String(format: "k%07d", index).utf8) }

    static func round(
        _ operation: RaceOperation, clients: Int, connections: [any RaceConnection], keys: Int, value: Data,
        warmup: Double, duration: Double, serverPIDs: [pid_t]
    ) async -> RoundResult {
        precondition(!connections.isEmpty && clients >= 1 && keys >= 1)
        let start = DispatchTime.now().uptimeNanoseconds
        let measureFrom = start + UInt64(warmup * 1e9)
        let end = measureFrom + UInt64(duration * 1e9)
        let cpuAtStart = Task {
            try? await Task.sleep(for: .seconds(warmup))
            return CPUSample(servers: serverPIDs)
        }
        var total = await withTaskGroup(of: RoundResult.self) { group in
            for client in 0..<clients {
                let connection = connections[client % connections.count]
                group.addTask {
                    await loop(operation, connection, keys: keys, value: value, measureFrom: measureFrom, end: end)
                }
            }
            var total = RoundResult()
            for await result in group { total.merge(result) }
            return total
        }
        let before = await cpuAtStart.value
        let after = CPUSample(servers: serverPIDs)
        total.seconds = duration
        total.serverCPU = after.servers - before.servers
        total.loadCPU = after.load - before.load
        total.machineCPU = after.machine - before.machine
        return total
    }

    private static func loop(
        _ operation: RaceOperation, _ connection: any RaceConnection, keys: Int, value: Data, measureFrom: UInt64,
        end: UInt64
    ) async -> RoundResult {
        var result = RoundResult()
        var options = CallOptions.defaults
        options.timeout = .seconds(10)
        var generator = SystemRandomNumberGenerator()
        while true {
            let begin = DispatchTime.now().uptimeNanoseconds
            guard begin < end else { break }
            let key = key(Int.random(in: 0..<keys, using: &generator))
            do {
                switch operation {
                case .put: try await connection.put(key: key, value: value, options: options)
                case .get: try await connection.get(key: key, options: options)
                }
                let done = DispatchTime.now().uptimeNanoseconds
                if begin >= measureFrom && done <= end {
                    _ = result.histogram.record(max((done - begin) / 1000, 1))
                    result.operations += 1
                }
            } catch {
                if begin >= measureFrom { result.errors += 1 }
            }
        }
        return result
    }

    /// Writes every key once (64 at a time) so that gets find values.
    static func preload(_ connections: [any RaceConnection], keys: Int, value: Data) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<64 {
                let connection = connections[worker % connections.count]
                group.addTask {
                    var options = CallOptions.defaults
                    options.timeout = .seconds(10)
                    for index in stride(from: worker, to: keys, by: 64) {
                        try await connection.put(key: key(index), value: value, options: options)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

/// CPU seconds used so far by some processes, by this one, and by the whole machine.
struct CPUSample {
    var servers: Double
    var load: Double
    var machine: Double

    init(servers pids: [pid_t]) {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        servers = pids.map { Self.processTicks($0) }.reduce(0, +) / ticks
        load = Self.processTicks(getpid()) / ticks
        machine = Self.machineBusyTicks() / ticks
    }

    /// utime + stime from /proc/PID/stat (0 for a process that is gone).
    static func processTicks(_ pid: pid_t) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return user + system
    }

    /// Busy ticks of all CPUs (everything but idle and iowait) from /proc/stat.
    static func machineBusyTicks() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return 0 }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 5 else { return 0 }
        return values.reduce(0, +) - values[3] - values[4]
    }

    /// Resident memory of a process in MiB (VmRSS), 0 if it is gone.
    static func residentMiB(_ pid: pid_t) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }
}
