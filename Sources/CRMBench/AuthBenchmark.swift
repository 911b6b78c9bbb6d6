import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Identity
import Sealing

/// Password hashing as logins pay for it: milliseconds per Argon2id hash and password checks a
/// second at each concurrency, through the bounded `PasswordHasher` the members use.
struct AuthBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Argon2id password hashing: ms per hash and checks per second, through the bounded hasher.",
        discussion: """
            Each cell runs closed-loop checks of a known user's password (`verify`) for --duration
            seconds at one concurrency, with the hasher admitting that many at once. With
            --login-as USER (its password on standard input), it then signs USER in through the
            leader's front, closed-loop, at each concurrency: logins a second, each a password
            check and a replicated session.
            """)

    @Option(help: "Concurrent checks, comma-separated.") var concurrency = "1,2,4"
    @Option(help: "Seconds per cell.") var duration = 5.0
    @Option(help: "Argon2id memory in KiB.") var memory: UInt32 = Argon2Parameters.standard.memoryKiB
    @Option(help: "Argon2id passes.") var passes: UInt32 = Argon2Parameters.standard.iterations
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Also measure sign-ins of this user through a front (the password is read from standard input).")
    var loginAs: String?
    @Option(help: "The cluster file (default: $CRM_CLUSTER or run/local/cluster.json).") var cluster: String?

    func validate() throws {
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration is 0 to 600 seconds") }
        guard !levels.isEmpty, levels.allSatisfy({ (1...64).contains($0) }) else {
            throw ValidationError("--concurrency holds 1 to 64, comma-separated")
        }
    }

    private var levels: [Int] { concurrency.split(separator: ",").compactMap { Int($0) } }

    func run() async throws {
        let pepper = try SymmetricKey.generate()
        let parameters = Argon2Parameters(memoryKiB: memory, iterations: passes, parallelism: 1)
        var rows: [[String: Any]] = []
        for level in levels {
            let hasher = try PasswordHasher(
                pepper: pepper, parameters: parameters, maxConcurrent: level, maxQueued: level)
            let stored = try await hasher.hash("correct horse battery staple")
            let end = ContinuousClock.now + .seconds(duration)
            let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for _ in 0..<level {
                    group.addTask {
                        var seen: [Double] = []
                        while ContinuousClock.now < end {
                            let took = try await ContinuousClock().measure {
                                guard
                                    case .match = try await hasher.verify(
                                        "correct horse battery staple", stored: stored)
                                else { throw ValidationError("a known password did not verify") }
                            }
                            seen.append(took.seconds * 1000)
                        }
                        return seen
                    }
                }
                return try await group.reduce(into: [Double]()) { $0 += $1 }
            }.sorted()
            let row: [String: Any] = [
                "what": "check", "concurrency": level, "checks": latencies.count,
                "checks_per_second": Double(latencies.count) / duration,
                "p50_ms": latencies[latencies.count / 2],
                "p99_ms": latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
            ]
            rows.append(row)
        }
        rows.append(try await unknownUserChecks(pepper: pepper, parameters: parameters))
        if let loginAs { rows += try await logins(loginAs) }
        if json {
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print(
            "crm-bench auth: argon2id m=\(memory) KiB t=\(passes) p=1, \(formatted(duration, decimals: 1)) s per cell")
        print("what    concurrency  per second  p50 ms  p99 ms")
        for row in rows {
            print(
                padded(row["what"] as! String, 8) + padded("\(row["concurrency"]!)", 13)
                    + padded(formatted(row["checks_per_second"] as! Double, decimals: 1), 12)
                    + padded(formatted(row["p50_ms"] as! Double, decimals: 1), 8)
                    + formatted(row["p99_ms"] as! Double, decimals: 1)
                    + (row["known_p50_ms"].map {
                        "  (known user, interleaved: p50 \(formatted($0 as! Double, decimals: 1)))"
                    } ?? ""))
        }
    }

    /// One client checking passwords of a user that does not exist, then of one that does,
    /// interleaved: the "unknown" row's p50 should match the "known" row's, or sign-in timing
    /// tells which users exist.
    private func unknownUserChecks(pepper: SymmetricKey, parameters: Argon2Parameters) async throws -> [String: Any] {
        let hasher = try PasswordHasher(pepper: pepper, parameters: parameters, maxConcurrent: 1, maxQueued: 1)
        let stored = try await hasher.hash("correct horse battery staple")
        var unknown: [Double] = []
        var known: [Double] = []
        let end = ContinuousClock.now + .seconds(duration)
        while ContinuousClock.now < end {
            unknown.append(
                try await ContinuousClock().measure { _ = try await hasher.verify("guess", stored: nil) }.seconds * 1000
            )
            known.append(
                try await ContinuousClock().measure { _ = try await hasher.verify("guess", stored: stored) }.seconds
                    * 1000)
        }
        unknown.sort()
        known.sort()
        return [
            "what": "unknown", "concurrency": 1, "checks": unknown.count,
            "checks_per_second": Double(unknown.count) / duration * 2,
            "p50_ms": unknown[unknown.count / 2], "p99_ms": unknown[min(unknown.count - 1, unknown.count * 99 / 100)],
            "known_p50_ms": known[known.count / 2],
        ]
    }

    /// Closed-loop sign-ins of `username` through the leader's front at each concurrency.
    private func logins(_ username: String) async throws -> [[String: Any]] {
        let data = FileHandle.standardInput.readData(ofLength: 1025)
        let password = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")[0]
        let target = try await ClusterTarget.resolve(clusterFile: cluster, member: nil, front: true)
        let connection = try MemberConnection(host: target.host, port: target.port, tls: target.tls)
        defer { Task { await connection.close() } }
        var request = Crm_V1_LoginRequest()
        request.username = username
        request.password = password
        let sent = request
        var rows: [[String: Any]] = []
        for level in levels {
            let end = ContinuousClock.now + .seconds(duration)
            let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for _ in 0..<level {
                    group.addTask {
                        var seen: [Double] = []
                        var options = CallOptions.defaults
                        options.timeout = .seconds(10)
                        while ContinuousClock.now < end {
                            let took = try await ContinuousClock().measure {
                                _ = try await connection.directory.login(sent, options: options)
                            }
                            seen.append(took.seconds * 1000)
                        }
                        return seen
                    }
                }
                return try await group.reduce(into: [Double]()) { $0 += $1 }
            }.sorted()
            rows.append([
                "what": "login", "concurrency": level, "checks": latencies.count,
                "checks_per_second": Double(latencies.count) / duration, "p50_ms": latencies[latencies.count / 2],
                "p99_ms": latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
            ])
        }
        return rows
    }
}
