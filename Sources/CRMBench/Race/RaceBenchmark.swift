import ArgumentParser
import CRMClient
import ClusterHarness
import Foundation
import Node

#if canImport(Glibc)
import Glibc
#endif

/// `crm-bench race`: this project's 3-member cluster against 3 etcd members on the same machine,
/// driven by one load generator with one client stack (gRPC over NIO's HTTP/2 transport, mutual
/// TLS) — etcd through its native KV service, the cluster through a node's front. One system runs
/// at a time, in alternating rounds (etcd, cluster, etcd, cluster, ...), so that the machine's
/// drift falls on both. Stops exactly the processes it started.
struct RaceBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "race",
        abstract: "Races the cluster against etcd on this machine: puts and linearizable gets, leader and follower.")

    @Option(help: "Client counts, comma-separated.") var clients = "1,16,64"
    @Option(help: "Operations: put, get, or both, comma-separated.") var ops = "put,get"
    @Option(help: "Rounds per system and cell (alternating systems).") var rounds = 2
    @Option(help: "Seconds measured per round (after the warm-up).") var duration: Double = 10
    @Option(help: "Seconds of unmeasured load first in each round.") var warmup: Double = 1
    @Option(help: "Keys (8 bytes each), preloaded in both systems.") var keys = 100_000
    @Option(help: "Bytes per value.") var valueSize = 256
    @Option(help: "Connections the clients share, per system.") var connections = 4
    @Option(help: "Leader-kill rounds per system (0: none).") var killRounds = 5
    @Option(help: "Scratch directory (default: a new one under the temporary directory).") var directory: String?
    @Option(help: "Where cluster/ is (default: the current directory).") var repository: String?
    @Flag(help: "Print JSON instead of the table.") var json = false
    @Flag(help: "Keep the scratch directory (members' data and logs) after a run that succeeded.") var keep = false

    func validate() throws {
        guard (1...20).contains(rounds), duration > 0, warmup >= 0 else {
            throw ValidationError("--rounds 1–20, --duration > 0, --warmup ≥ 0")
        }
        guard (1...10_000_000).contains(keys), (0...(1 << 20)).contains(valueSize), (1...64).contains(connections)
        else { throw ValidationError("--keys 1–10^7, --value-size ≤ 1 MiB, --connections 1–64") }
        guard !clientCounts.isEmpty, clientCounts.allSatisfy({ (1...1024).contains($0) }) else {
            throw ValidationError("--clients: counts of 1 to 1024, comma-separated")
        }
        guard !operations.isEmpty else { throw ValidationError("--ops: put, get") }
        guard (0...20).contains(killRounds) else { throw ValidationError("--kill-rounds 0–20") }
    }

    var clientCounts: [Int] { clients.split(separator: ",").compactMap { Int($0) } }
    var operations: [RaceOperation] { ops.split(separator: ",").compactMap { RaceOperation(rawValue: String($0)) } }

    enum Via: String, CaseIterable { case leader, follower }

    struct Cell {
        var operation: RaceOperation
        var clients: Int
        var via: Via
        var etcd: [RoundResult] = []
        var cluster: [RoundResult] = []
    }

    func run() async throws {
        let repository = URL(fileURLWithPath: repository ?? FileManager.default.currentDirectoryPath)
        let scratch = directory ?? NSTemporaryDirectory() + "crm-race-" + UUID().uuidString
        let result = try await race(in: scratch, repository: repository)
        if json {
            printJSON(result)
        } else {
            printTable(result)
        }
        // Only a run that succeeded removes what it made; a failed one leaves its logs.
        if directory == nil && !keep { try? FileManager.default.removeItem(atPath: scratch) }
    }

    struct Result {
        var cells: [Cell]
        var memory: (etcd: [Double], cluster: [Double])
        var gaps: (etcd: [Double], cluster: [Double])
    }

    private func race(in scratch: String, repository: URL) async throws -> Result {
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let value = Data((0..<valueSize).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })

        let etcd = try EtcdCluster(directory: scratch + "/etcd", repository: repository)
        defer { etcd.stop() }
        let cluster = try ProcessCluster(
            ids: [1, 2, 3], directory: scratch + "/cluster", binaries: binaries, repository: repository,
            clients: ["app"], removesDirectory: false)
        cluster.register()
        ProcessCluster.stopOnSignals(message: "crm-bench race: interrupted; its members were stopped")
        defer {
            cluster.stopAll()
            cluster.unregister()
        }
        // One application under one certificate is the load: the front's per-identity limit
        // (a default chosen for many applications) must not be what the race measures.
        try cluster.writeConfigs {
            $0.front?.requestsPerSecond = 1_000_000
            $0.front?.burst = 1_000_000
        }
        progress("starting 3 etcd members and 3 cluster members in \(scratch)")
        try await etcd.start()
        try cluster.startAll()
        guard await cluster.waitForLeader() != nil, let etcdLeader = await etcd.leader() else {
            throw HarnessError("a system elected no leader; logs in \(scratch)")
        }

        let etcdTargets = try Dictionary(
            uniqueKeysWithValues: Via.allCases.map { via in
                let index = via == .leader ? etcdLeader : (etcdLeader + 1) % 3
                return (
                    via,
                    try (0..<connections).map { _ in
                        try EtcdConnection(endpoint: etcd.members[index].client, tls: etcd.clientTLS)
                    } as [any RaceConnection]
                )
            })
        let clusterTargets = try await clusterConnections(cluster)
        defer {
            for connection in etcdTargets.values.flatMap({ $0 }) + clusterTargets.values.flatMap({ $0 }) {
                Task { await connection.close() }
            }
        }

        progress("preloading \(keys) keys of \(valueSize) bytes into each system")
        try await RaceLoad.preload(etcdTargets[.leader]!, keys: keys, value: value)
        try await RaceLoad.preload(clusterTargets[.leader]!, keys: keys, value: value)

        var cells: [Cell] = []
        for operation in operations {
            for clients in clientCounts {
                for via in Via.allCases {
                    var cell = Cell(operation: operation, clients: clients, via: via)
                    for round in 0..<rounds {
                        cell.etcd.append(
                            await RaceLoad.round(
                                operation, clients: clients, connections: etcdTargets[via]!, keys: keys, value: value,
                                warmup: warmup, duration: duration, serverPIDs: etcd.pids))
                        cell.cluster.append(
                            await RaceLoad.round(
                                operation, clients: clients, connections: clusterTargets[via]!, keys: keys,
                                value: value, warmup: warmup, duration: duration,
                                serverPIDs: cluster.ids.compactMap(cluster.pid)))
                        progress(
                            "\(operation) × \(clients) via \(via), round \(round + 1): etcd \(Int(cell.etcd.last!.perSecond)) ops/s, cluster \(Int(cell.cluster.last!.perSecond)) ops/s"
                        )
                    }
                    cells.append(cell)
                }
            }
        }
        let memory = (
            etcd: etcd.pids.map(CPUSample.residentMiB),
            cluster: cluster.ids.compactMap(cluster.pid).map(CPUSample.residentMiB)
        )
        var gaps: (etcd: [Double], cluster: [Double]) = ([], [])
        if killRounds > 0 {
            progress("leader-kill gap: writes through every member, SIGKILL to the leader, \(killRounds) rounds each")
            let value = value
            gaps.etcd = try await LeaderKillGap.measure(
                etcdSystem(etcd), rounds: killRounds, keys: keys, value: value, progress: progress)
            gaps.cluster = try await LeaderKillGap.measure(
                clusterSystem(cluster), rounds: killRounds, keys: keys, value: value, progress: progress)
        }
        return Result(cells: cells, memory: memory, gaps: gaps)
    }

    private func etcdSystem(_ etcd: EtcdCluster) -> LeaderKillGap.System {
        LeaderKillGap.System(
            name: "etcd", members: etcd.members.count, leader: { await etcd.leader() },
            connect: { try EtcdConnection(endpoint: etcd.members[$0].client, tls: etcd.clientTLS) },
            kill9: { etcd.kill9($0) }, restart: { try await etcd.restart($0) })
    }

    /// The cluster through its fronts (as the application), members 1...3 at indexes 0...2.
    private func clusterSystem(_ cluster: ProcessCluster) -> LeaderKillGap.System {
        precondition(cluster.ids == [1, 2, 3])
        return LeaderKillGap.System(
            name: "cluster", members: cluster.ids.count,
            leader: {
                let leader = await cluster.waitForLeader(seconds: 5)
                return leader.map { Int($0) - 1 }
            },
            connect: { index in
                let front = cluster.addresses(UInt64(index + 1)).front
                return try MemberConnection(host: front.host, port: front.port, tls: cluster.tls("app"))
            },
            kill9: { cluster.kill9(UInt64($0 + 1)) },
            restart: { index in
                try cluster.start(UInt64(index + 1))
                guard await cluster.waitForLeader() != nil else {
                    throw HarnessError("the cluster agreed on no leader after member \(index + 1) restarted")
                }
            })
    }

    /// The leader's front and a follower's front, `connections` gRPC connections each.
    private func clusterConnections(_ cluster: ProcessCluster) async throws -> [Via: [any RaceConnection]] {
        let leader = await cluster.leader()
        let follower = cluster.ids.first { $0 != leader }!
        var targets: [Via: [any RaceConnection]] = [:]
        let members: [(Via, UInt64)] = [(.leader, leader), (.follower, follower)]
        for (via, id) in members {
            let front = cluster.addresses(id).front
            targets[via] = try (0..<connections).map { _ in
                try MemberConnection(host: front.host, port: front.port, tls: cluster.tls("app"))
            }
        }
        return targets
    }

    private func progress(_ text: String) {
        FileHandle.standardError.write(Data("crm-bench race: \(text)\n".utf8))
    }

    /// The median round by throughput (the lower middle for an even count).
    private func median(_ results: [RoundResult]) -> RoundResult {
        results.sorted { $0.perSecond < $1.perSecond }[(results.count - 1) / 2]
    }

    private func printTable(_ result: Result) {
        print(
            "crm-bench race: \(keys) keys, \(valueSize)-byte values, \(rounds) alternating rounds of \(formatted(duration, decimals: 1)) s per system and row (median round shown); gRPC with mutual TLS to both"
        )
        let header = [
            "op", "clients", "via", "etcd ops/s", "p50", "p99", "p99.9", "cluster ops/s", "ratio", "p50", "p99",
            "p99.9", "CPU s etcd/cluster/load/other",
        ]
        let widths = [4, 8, 9, 11, 7, 7, 8, 14, 6, 7, 7, 8, 30]
        print(zip(header, widths).map { padded($0, $1) }.joined(separator: " "))
        for cell in result.cells {
            let (e, c) = (median(cell.etcd), median(cell.cluster))
            let columns = [
                cell.operation.rawValue, "\(cell.clients)", cell.via.rawValue, formatted(e.perSecond, decimals: 0),
                formatted(e.milliseconds(50), decimals: 2), formatted(e.milliseconds(99), decimals: 2),
                formatted(e.milliseconds(99.9), decimals: 2), formatted(c.perSecond, decimals: 0),
                formatted(c.perSecond / max(e.perSecond, 1e-9), decimals: 2) + "×",
                formatted(c.milliseconds(50), decimals: 2), formatted(c.milliseconds(99), decimals: 2),
                formatted(c.milliseconds(99.9), decimals: 2),
                [e.serverCPU, c.serverCPU, e.loadCPU + c.loadCPU, e.otherCPU + c.otherCPU].map {
                    formatted($0, decimals: 1)
                }.joined(separator: "/"),
            ]
            print(zip(columns, widths).map { padded($0, $1) }.joined(separator: " "))
            let errors = cell.etcd.map(\.errors).reduce(0, +) + cell.cluster.map(\.errors).reduce(0, +)
            if errors > 0 { print("    (errors in this row: \(errors))") }
        }
        print(
            "latencies in ms; ratio = cluster / etcd throughput; CPU s in the median rounds' windows: servers, the load generator, everything else on the machine"
        )
        let memory = result.memory
        print(
            "RSS per member (MiB): etcd \(memory.etcd.map { formatted($0, decimals: 0) }.joined(separator: ", ")); cluster \(memory.cluster.map { formatted($0, decimals: 0) }.joined(separator: ", "))"
        )
        if !result.gaps.etcd.isEmpty {
            func describe(_ gaps: [Double]) -> String {
                let sorted = gaps.sorted()
                let ms = sorted.map { formatted($0 * 1000, decimals: 0) }.joined(separator: ", ")
                return
                    "median \(formatted(sorted[(sorted.count - 1) / 2] * 1000, decimals: 0)) ms, max \(formatted(sorted.last! * 1000, decimals: 0)) ms (\(ms))"
            }
            print(
                "leader-kill gap (SIGKILL to the first write sent after it that succeeded, writes through every member):"
            )
            print("  etcd     \(describe(result.gaps.etcd))")
            print("  cluster  \(describe(result.gaps.cluster))")
        }
    }

    private func printJSON(_ result: Result) {
        func describe(_ results: [RoundResult]) -> [[String: Any]] {
            results.map { r in
                [
                    "ops_per_second": r.perSecond, "p50_ms": r.milliseconds(50), "p99_ms": r.milliseconds(99),
                    "p999_ms": r.milliseconds(99.9), "errors": r.errors, "server_cpu_s": r.serverCPU,
                    "load_cpu_s": r.loadCPU, "other_cpu_s": r.otherCPU,
                ]
            }
        }
        let object: [String: Any] = [
            "keys": keys, "value_bytes": valueSize, "rounds": rounds, "duration_s": duration, "transport": "grpc-mtls",
            "rows": result.cells.map { cell in
                [
                    "op": cell.operation.rawValue, "clients": cell.clients, "via": cell.via.rawValue,
                    "etcd": describe(cell.etcd), "cluster": describe(cell.cluster),
                ] as [String: Any]
            },
            "rss_mib": ["etcd": result.memory.etcd, "cluster": result.memory.cluster],
            "leader_kill_gap_s": ["etcd": result.gaps.etcd, "cluster": result.gaps.cluster],
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
