import ArgumentParser
import CRMClient
import CRMProto
import ClusterHarness
import Foundation
import GRPCCore
import Node

#if canImport(Glibc)
import Glibc
#endif

/// `crm-bench catchup`: a store larger than any in-memory bound, and a new member that catches
/// up from it by snapshot. Starts 3 members (the log compacted every `--snapshot-every`
/// entries), writes `--gib` of incompressible values, asks the leader for a snapshot and writes
/// `--tail-values` more (the same log tail at every size), waits for background compactions to
/// settle, then adds a fourth member as a learner and samples the resident memory of it and of
/// the leader until it serves the last value written. Prints the time, the peaks, and what the
/// members logged about the snapshot.
struct CatchUpBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catchup",
        abstract: "A new member catches up by snapshot from a store larger than memory bounds; time and RSS.")

    @Option(help: "Store size in GiB (values only).") var gib: Double = 4
    @Option(help: "Bytes per value (at most 1 MiB).") var valueBytes = 1 << 20
    @Option(help: "Concurrent writers while loading.") var writers = 4
    @Option(help: "Values written after the leader's snapshot: the log the new member replays after it.")
    var tailValues = 64
    @Option(help: "Log entries between compactions.") var snapshotEvery = 500
    @Option(help: "Seconds the new member may take to catch up.") var timeout: Double = 1800
    @Option(help: "Seconds to wait after loading (the members' background compactions settle).")
    var settleSeconds: Double = 30
    @Option(help: "Scratch directory (default: a new one under the temporary directory).") var directory: String?
    @Option(help: "Where cluster/ is (default: the current directory).") var repository: String?
    @Flag(help: "Print JSON instead of the table.") var json = false
    @Flag(help: "Keep the scratch directory after a run that succeeded.") var keep = false

    func validate() throws {
        guard gib > 0, gib <= 64, (1024...(1 << 20)).contains(valueBytes), (1...64).contains(writers),
            (100...100_000).contains(snapshotEvery), timeout > 0, settleSeconds >= 0, (0...10_000).contains(tailValues)
        else {
            throw ValidationError(
                "--gib (0, 64], --value-bytes 1 KiB–1 MiB, --writers 1–64, --snapshot-every 100–100000, --tail-values 0–10000"
            )
        }
    }

    var keyCount: Int { max(1, Int(gib * Double(1 << 30)) / valueBytes) }

    func run() async throws {
        let repository = URL(fileURLWithPath: repository ?? FileManager.default.currentDirectoryPath)
        let scratch = directory ?? NSTemporaryDirectory() + "crm-catchup-" + UUID().uuidString
        let result = try await measure(in: scratch, repository: repository)
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for key in result.keys.sorted() { print("\(key): \(result[key]!)") }
        }
        if directory == nil && !keep { try? FileManager.default.removeItem(atPath: scratch) }
    }

    private func measure(in scratch: String, repository: URL) async throws -> [String: Any] {
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let cluster = try ProcessCluster(
            ids: [1, 2, 3], spares: [4], directory: scratch, binaries: binaries, repository: repository,
            clients: ["app"], removesDirectory: false)
        cluster.register()
        ProcessCluster.stopOnSignals(message: "crm-bench catchup: interrupted; its members were stopped")
        defer {
            cluster.stopAll()
            cluster.unregister()
        }
        let snapshotEvery = snapshotEvery
        // The store may exceed the default storage quota (8 GiB): twice the values it will hold.
        let quota = max(UInt64(8) << 30, UInt64(keyCount * valueBytes) * 2)
        try cluster.writeConfigs {
            $0.limits = NodeConfig.Limits(snapshotEveryEntries: snapshotEvery)
            $0.health = NodeConfig.Health(storageQuotaBytes: quota)
        }
        try cluster.startAll()
        guard let leader = await cluster.waitForLeader() else { throw HarnessError("no leader; logs in \(scratch)") }

        progress("writing \(keyCount) values of \(valueBytes) bytes through member \(leader)")
        let loadStarted = Date()
        try await load(0..<keyCount, through: cluster.connection(leader, .client, as: "app"))
        let loadSeconds = Date().timeIntervalSince(loadStarted)
        // The snapshot covers the whole load, and the same tail follows it at every size: the
        // new member's memory is compared on equal terms.
        var snapshotOptions = CallOptions.defaults
        snapshotOptions.timeout = .seconds(600)
        let snapshot = try await cluster.connection(leader, .admin).admin.snapshot(
            Crm_V1_SnapshotRequest(), options: snapshotOptions)
        progress("leader's snapshot at index \(snapshot.index); writing \(tailValues) values after it")
        try await load(keyCount..<keyCount + tailValues, through: cluster.connection(leader, .client, as: "app"))
        let lastKey = keyCount + tailValues - 1
        let leaderPID = cluster.pid(leader)!
        let leaderAfterLoad = Self.memoryMiB(leaderPID)
        progress("waiting \(Int(settleSeconds)) s for background compactions to settle")
        try await Task.sleep(nanoseconds: UInt64(settleSeconds * 1e9))
        let leaderBefore = Self.memoryMiB(leaderPID)

        progress("adding member 4 as a learner; it catches up by snapshot")
        try cluster.start(4)
        let started = Date()
        try await addLearner(cluster, leader: leader)
        let member4 = try cluster.connection(4, .client, as: "app")
        var peak = (member: 0.0, leader: 0.0, memberUntilInstalled: 0.0)
        var installed = false
        var timeline: [String] = []
        var caughtUp = false
        while Date().timeIntervalSince(started) < timeout {
            let memberRSS = cluster.pid(4).map { Self.memoryMiB($0).rss } ?? 0
            peak.member = max(peak.member, memberRSS)
            installed = installed || cluster.log(4).contains("installed a snapshot")
            if !installed { peak.memberUntilInstalled = max(peak.memberUntilInstalled, memberRSS) }
            peak.leader = max(peak.leader, Self.memoryMiB(leaderPID).rss)
            let elapsed = Date().timeIntervalSince(started)
            if timeline.count <= Int(elapsed / 5) {
                timeline.append(
                    "\(Int(elapsed)) s: \(Int(memberRSS)) MiB, leader \(Int(Self.memoryMiB(leaderPID).rss)) MiB")
            }
            if try await value(Self.key(lastKey), from: member4) == Self.value(lastKey, bytes: valueBytes) {
                caughtUp = true
                break
            }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        let seconds = Date().timeIntervalSince(started)
        guard caughtUp else { throw HarnessError("member 4 did not catch up in \(timeout) s; logs in \(scratch)") }
        for sample in Array(stride(from: 0, to: keyCount, by: max(1, keyCount / 16))) + [lastKey] {
            guard try await value(Self.key(sample), from: member4) == Self.value(sample, bytes: valueBytes) else {
                throw HarnessError("member 4 holds a wrong value for key \(sample); logs in \(scratch)")
            }
        }
        let memberAfter = Self.memoryMiB(cluster.pid(4)!)
        let storeBytes = Double(keyCount * valueBytes)
        return [
            "store_gib": storeBytes / Double(1 << 30),
            "values": keyCount,
            "value_bytes": valueBytes,
            "load_seconds": rounded(loadSeconds),
            "load_mb_per_second": rounded(storeBytes / 1e6 / loadSeconds),
            "catchup_seconds": rounded(seconds),
            "catchup_mb_per_second": rounded(storeBytes / 1e6 / seconds),
            "tail_values": tailValues,
            "new_member_rss_max_sampled_mib": rounded(peak.member),
            "new_member_rss_max_sampled_until_installed_mib": rounded(peak.memberUntilInstalled),
            "new_member_rss_peak_mib": rounded(memberAfter.peak),
            "rss_every_5_s": timeline,
            "leader_rss_after_load_mib": rounded(leaderAfterLoad.rss),
            "leader_rss_before_mib": rounded(leaderBefore.rss),
            "leader_rss_max_sampled_mib": rounded(peak.leader),
            "leader_rss_peak_mib": rounded(Self.memoryMiB(leaderPID).peak),
            "leader_log": cluster.log(leader).split(separator: "\n").filter { $0.contains("snapshot sent") }.map(
                String.init),
            "new_member_log": cluster.log(4).split(separator: "\n").filter {
                $0.contains("snapshot received") || $0.contains("restored from a snapshot")
                    || $0.contains("installed a snapshot")
            }.map(String.init),
            "data_dir_mib": [
                "leader": rounded(Self.directoryMiB(cluster.directory + "/" + "node-\(leader)")),
                "new_member": rounded(Self.directoryMiB(cluster.directory + "/node-4")),
            ],
        ]
    }

    /// Writes the values of `keys`, `writers` at a time, through one member's client API.
    private func load(_ keys: Range<Int>, through connection: MemberConnection) async throws {
        let (keyCount, valueBytes, writers) = (keyCount, valueBytes, writers)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var options = CallOptions.defaults
                    options.timeout = .seconds(60)
                    for index in stride(from: keys.lowerBound + writer, to: keys.upperBound, by: writers) {
                        var request = Crm_V1_PutRequest()
                        request.key = Self.key(index)
                        request.value = Self.value(index, bytes: valueBytes)
                        _ = try await connection.kv.put(request, options: options)
                        if writer == 0 && index % max(writers, keyCount / 10 / writers * writers) == 0 {
                            FileHandle.standardError.write(Data("crm-bench catchup: \(index) of \(keyCount)\n".utf8))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private func addLearner(_ cluster: ProcessCluster, leader: UInt64) async throws {
        let endpoints = cluster.addresses(4)
        var request = Crm_V1_AddLearnerRequest()
        request.id = 4
        request.endpoints.peer = "\(endpoints.peer.host):\(endpoints.peer.port)"
        request.endpoints.client = "\(endpoints.client.host):\(endpoints.client.port)"
        request.endpoints.admin = "\(endpoints.admin.host):\(endpoints.admin.port)"
        var options = CallOptions.defaults
        options.timeout = .seconds(30)
        _ = try await cluster.connection(leader, .admin).admin.addLearner(request, options: options)
    }

    /// A serializable read of the member's own state (nil while it has none or is busy).
    private func value(_ key: Data, from connection: MemberConnection) async throws -> Data? {
        var request = Crm_V1_GetRequest()
        request.key = key
        request.consistency = .serializable
        var options = CallOptions.defaults
        options.timeout = .seconds(5)
        guard let response = try? await connection.kv.get(request, options: options), response.found else { return nil }
        return response.value
    }

    static func key(_ index: Int) -> Data { Data(String(format: "v%08d", index).utf8) }

    /// Incompressible bytes that depend on the key (xorshift), so a wrong value is seen.
    static func value(_ index: Int, bytes: Int) -> Data {
        var state = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
        var data = Data(count: bytes)
        data.withUnsafeMutableBytes { buffer in
            let words = buffer.bindMemory(to: UInt64.self)
            for position in words.indices {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                words[position] = state
            }
        }
        return data
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in MiB.
    static func memoryMiB(_ pid: pid_t) -> (rss: Double, peak: Double) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Double {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
                let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
            else { return 0 }
            return kib / 1024
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }

    static func directoryMiB(_ path: String) -> Double {
        guard let files = FileManager.default.enumerator(atPath: path) else { return 0 }
        var bytes = 0.0
        for case let name as String in files {
            let attributes = try? FileManager.default.attributesOfItem(atPath: path + "/" + name)
            bytes += Double((attributes?[.size] as? NSNumber)?.int64Value ?? 0)
        }
        return bytes / Double(1 << 20)
    }

    private func rounded(_ value: Double) -> Double { (value * 10).rounded() / 10 }

    private func progress(_ text: String) {
        FileHandle.standardError.write(Data("crm-bench catchup: \(text)\n".utf8))
    }
}
