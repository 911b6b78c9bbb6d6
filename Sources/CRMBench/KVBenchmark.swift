import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Histogram

/// `crm-bench kv`: closed-loop load over the client API — a member's, or with `--front` a node's
/// front. Each client sends one request, waits for the answer, and sends the next, for the whole
/// duration; latencies go into an HDR histogram (microseconds, three significant digits). The
/// longest time in which no request succeeded is reported too (the pause a failover causes).
struct KVBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "Closed-loop load on a cluster's client API; prints ops/s and p50/p99/p99.9 latency.")

    enum Operation: String, ExpressibleByArgument, CaseIterable {
        case put, get, mixed
    }

    @Option(help: "Concurrent clients.") var clients = 16
    @Option(help: "Seconds of measured load (after the warm-up).") var duration: Double = 10
    @Option(help: "Seconds of unmeasured load first.") var warmup: Double = 1
    @Option(help: "Bytes per value.") var valueSize = 256
    @Option(help: "Distinct keys (chosen uniformly).") var keys = 10_000
    @Option(help: "put, get (linearizable), or mixed (half each).") var op: Operation = .put
    @Flag(help: "Serializable gets (served by the member itself) instead of linearizable ones.") var serializable =
        false
    @Option(help: "The cluster file (default: $CRM_CLUSTER or run/local/cluster.json).") var cluster: String?
    @Option(help: "Send to this member (default: the leader).") var member: UInt64?
    @Flag(help: "Send to the member's front (which routes for the whole cluster) instead of its client API.")
    var front = false
    @Option(help: "Connections shared by the clients.") var connections = 4
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard clients >= 1 && clients <= 4096 else { throw ValidationError("--clients must be 1 to 4096") }
        guard duration > 0, warmup >= 0 else { throw ValidationError("--duration must be positive") }
        guard valueSize >= 0 && valueSize <= 1 << 20 else {
            throw ValidationError("--value-size must be at most 1 MiB")
        }
        guard keys >= 1 else { throw ValidationError("--keys must be at least 1") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
    }

    func run() async throws {
        let target = try await ClusterTarget.resolve(clusterFile: cluster, member: member, front: front)
        let pool = try (0..<connections).map { _ in
            try MemberConnection(host: target.host, port: target.port, tls: target.tls)
        }
        defer { for connection in pool { Task { await connection.close() } } }
        let value = Data((0..<valueSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        if op != .put {
            // Gets need something to find: one pass over the keys first.
            try await preload(pool[0], value: value)
        }
        let started = Date()
        let measureFrom = started.addingTimeInterval(warmup)
        let end = measureFrom.addingTimeInterval(duration)
        let measureFromUptime = DispatchTime.now().uptimeNanoseconds + UInt64(warmup * 1e9)
        let results = await withTaskGroup(of: ClientResult.self) { group in
            for client in 0..<clients {
                let connection = pool[client % pool.count]
                group.addTask {
                    await runClient(client, connection: connection, value: value, measureFrom: measureFrom, end: end)
                }
            }
            var total = ClientResult()
            for await result in group { total.merge(result) }
            return total
        }
        report(
            results, target: target,
            gap: results.longestGap(from: measureFromUptime, to: measureFromUptime + UInt64(duration * 1e9)))
    }

    struct ClientResult {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var operations = 0
        var errors: [String: Int] = [:]
        /// Uptime nanoseconds at which each measured request succeeded.
        var completions: [UInt64] = []

        /// One client's closed loop: `request` (given its count, from 1) one at a time until
        /// `end`, each latency and outcome recorded from `measureFrom` on.
        static func closedLoop(
            measureFrom: Date, end: Date, _ request: (Int) async throws -> Void
        ) async -> ClientResult {
            var result = ClientResult()
            var count = 0
            while Date() < end {
                count += 1
                let begin = DispatchTime.now().uptimeNanoseconds
                do {
                    try await request(count)
                    if Date() >= measureFrom {
                        _ = result.histogram.record(max((DispatchTime.now().uptimeNanoseconds - begin) / 1000, 1))
                        result.operations += 1
                        result.completions.append(DispatchTime.now().uptimeNanoseconds)
                    }
                } catch let error as RPCError {
                    if Date() >= measureFrom { result.errors["\(error.code)", default: 0] += 1 }
                } catch {
                    if Date() >= measureFrom { result.errors["\(error)", default: 0] += 1 }
                }
            }
            return result
        }

        mutating func merge(_ other: ClientResult) {
            histogram.add(other.histogram)
            operations += other.operations
            for (kind, count) in other.errors { errors[kind, default: 0] += count }
            completions += other.completions
        }

        /// The longest stretch of the measured time with no success, and when it began
        /// (seconds after the measurement started).
        func longestGap(from start: UInt64, to end: UInt64) -> (nanoseconds: UInt64, startsAt: Double) {
            let times = [start] + completions.sorted() + [max(end, completions.max() ?? end)]
            var best: (UInt64, Double) = (0, 0)
            for (earlier, later) in zip(times, times.dropFirst()) where later - earlier > best.0 {
                best = (later - earlier, Double(earlier - start) / 1e9)
            }
            return best
        }
    }

    private func runClient(
        _ client: Int, connection: MemberConnection, value: Data, measureFrom: Date, end: Date
    ) async -> ClientResult {
        var generator = SystemRandomNumberGenerator()
        var options = CallOptions.defaults
        options.timeout = .seconds(10)
        return await ClientResult.closedLoop(measureFrom: measureFrom, end: end) { count in
            let key = Data("bench/\(Int.random(in: 0..<keys, using: &generator))".utf8)
            if op == .put || (op == .mixed && count % 2 == 0) {
                var request = Crm_V1_PutRequest()
                request.key = key
                request.value = value
                _ = try await connection.kv.put(request, options: options)
            } else {
                var request = Crm_V1_GetRequest()
                request.key = key
                request.consistency = serializable ? .serializable : .linearizable
                _ = try await connection.kv.get(request, options: options)
            }
        }
    }

    private func preload(_ connection: MemberConnection, value: Data) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<32 {
                group.addTask {
                    for index in stride(from: worker, to: keys, by: 32) {
                        var request = Crm_V1_PutRequest()
                        request.key = Data("bench/\(index)".utf8)
                        request.value = value
                        _ = try await connection.kv.put(request)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private func report(_ results: ClientResult, target: ClusterTarget, gap: (nanoseconds: UInt64, startsAt: Double)) {
        let perSecond = Double(results.operations) / duration
        func milliseconds(_ percentile: Double) -> Double {
            Double(results.histogram.valueAtPercentile(percentile)) / 1000
        }
        let errors = results.errors.values.reduce(0, +)
        if json {
            let object: [String: Any] = [
                "op": op.rawValue, "clients": clients, "duration_s": duration, "value_bytes": valueSize, "keys": keys,
                "target_member": target.member, "operations": results.operations, "ops_per_second": perSecond,
                "latency_ms": [
                    "p50": milliseconds(50), "p99": milliseconds(99), "p99.9": milliseconds(99.9),
                    "max": Double(results.histogram.maxRecorded) / 1000,
                ],
                "errors": results.errors, "via": front ? "front" : "member",
                "longest_gap_ms": Double(gap.nanoseconds) / 1e6, "longest_gap_starts_s": gap.startsAt,
            ]
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                "crm-bench kv: op=\(op.rawValue)\(op != .put && serializable ? " (serializable)" : "") clients=\(clients) duration=\(duration)s value=\(valueSize)B keys=\(keys) target=\(front ? "front of member" : "member") \(target.member) (\(target.host):\(target.port))"
            )
            print(
                String(
                    format: "ops=%d ops/s=%.0f errors=%d%@", results.operations, perSecond, errors,
                    errors == 0
                        ? ""
                        : " (" + results.errors.map { "\($0.key): \($0.value)" }.sorted().joined(separator: ", ") + ")")
            )
            print(
                String(
                    format: "latency p50=%.3f ms p99=%.3f ms p99.9=%.3f ms max=%.3f ms", milliseconds(50),
                    milliseconds(99),
                    milliseconds(99.9), Double(results.histogram.maxRecorded) / 1000))
            print(
                String(
                    format: "longest gap without a success: %.3f s, from %.1f s into the measurement",
                    Double(gap.nanoseconds) / 1e9, gap.startsAt))
        }
    }
}

/// Which member to load, found from the cluster file.
struct ClusterTarget {
    var member: UInt64
    var host: String
    var port: Int
    var tls: ClientTLSFiles
    /// Every member's health listener (host:port), for their metrics.
    var health: [String] = []

    static func resolve(clusterFile: String?, member: UInt64?, front: Bool = false) async throws -> ClusterTarget {
        let path = clusterFile ?? ProcessInfo.processInfo.environment["CRM_CLUSTER"] ?? ClusterFile.defaultPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no cluster file at \(path): start a local cluster with `make up`, or pass --cluster")
        }
        let file: ClusterFile
        do { file = try ClusterFile.load(path: path) } catch { throw ValidationError("\(error)") }
        let tls = ClusterFile.files(file.tls, relativeTo: path)
        func split(_ text: String) throws -> (String, Int) {
            guard let endpoint = Endpoint(text) else { throw ValidationError("\(path): '\(text)' is not host:port") }
            return (endpoint.host, endpoint.port)
        }
        var chosen = member
        if chosen == nil {
            for candidate in file.members {
                guard let (host, port) = try? split(candidate.admin) else { continue }
                guard let connection = try? MemberConnection(host: host, port: port, tls: tls) else { continue }
                var options = CallOptions.defaults
                options.timeout = .seconds(2)
                let status = try? await connection.admin.status(Crm_V1_StatusRequest(), options: options)
                await connection.close()
                if let status, status.leaderID != 0 {
                    chosen = status.leaderID
                    break
                }
            }
        }
        guard let id = chosen, let entry = file.members.first(where: { $0.id == id }) else {
            throw ValidationError("no leader found in \(path); is the cluster up (crmctl status)?")
        }
        if front && entry.front == nil {
            throw ValidationError("\(path) lists no front for member \(id); give it a \"front\" address")
        }
        let (host, port) = try split(front ? entry.front! : entry.client)
        // The load runs as an application, as production clients do, not as the admin.
        let loadTLS = ClusterFile.files(file.clientTLS ?? file.tls, relativeTo: path)
        return ClusterTarget(
            member: id, host: host, port: port, tls: loadTLS, health: file.members.compactMap(\.health))
    }
}
