import CRMClient
import CRMProto
import Dispatch
import Foundation
import GRPCCore

/// One drill: a fresh cluster, the workload, the scenario's faults on schedule, the heal, the
/// recovery, the final reads, and the judgement; everything written to the report directory.
struct Drill {
    let scenario: Scenario
    let report: String
    let binaries: URL
    let repository: URL
    let progress: (String) -> Void

    struct FaultRecord: Sendable {
        var seconds: Double
        var action: String
        var member: UInt64?
    }

    func run() async throws -> Verdict {
        try FileManager.default.createDirectory(atPath: report, withIntermediateDirectories: true)
        let cluster = try ScratchCluster(nodes: scenario.nodes, directory: report + "/cluster",
                                         binaries: binaries, repository: repository)
        defer { cluster.stopAll() }
        for id in cluster.ids { try cluster.start(id) }
        guard await waitForLeader(cluster, seconds: 30) != 0 else { throw ChaosError("the cluster elected no leader in 30 s; see \(report)/cluster/node-*.log") }
        progress("cluster of \(scenario.nodes) up; running \(scenario.name) for \(scenario.durationSeconds) s with \(scenario.clients) clients")

        let history = HistoryLog()
        let fronts = cluster.ids.map { Endpoint(host: "127.0.0.1", port: cluster.ports[$0]!.front) }
        let start = Workload.now()
        let end = start + UInt64(scenario.durationSeconds * 1e9)
        let workload = Workload(clients: scenario.clients, keys: scenario.keys, fronts: fronts, tls: cluster.tls, history: history)
        async let load: Void = workload.run(until: end)
        var timeline = try await inject(cluster, start: start)
        // Heal: resume the paused, restart the killed.
        for id in cluster.paused.sorted() {
            cluster.resume(id)
            timeline.append(FaultRecord(seconds: seconds(since: start), action: "resume", member: id))
        }
        for id in cluster.ids where !cluster.isRunning(id) {
            try cluster.start(id)
            timeline.append(FaultRecord(seconds: seconds(since: start), action: "restart", member: id))
        }
        let healedAt = Workload.now()
        try await load
        progress("workload done: \(history.all.count) events; checking")

        var verdict = Verdict()
        let (available, worst) = availability(history.all, healedAt: healedAt, faults: timeline, start: start)
        verdict.checks.append(available)
        verdict.worstUnavailabilitySeconds = worst
        let finalReads = await readEveryKey(fronts: fronts, tls: cluster.tls, history: history)
        verdict.checks.append(finalReads)
        let (linearizable, checked) = Judge.linearizability(history.all)
        verdict.checks.append(linearizable)
        verdict.operationsChecked = checked
        verdict.checks.append(await convergence(cluster))
        await cluster.closeConnections()
        cluster.stopAll()
        try write(history: history.all, timeline: timeline, verdict: verdict, start: start, cluster: cluster)
        return verdict
    }

    private func seconds(since start: UInt64) -> Double { Double(Workload.now() - start) / 1e9 }

    /// Applies the scenario's faults at their times; returns what was done when.
    private func inject(_ cluster: ScratchCluster, start: UInt64) async throws -> [FaultRecord] {
        var timeline: [FaultRecord] = []
        var resumes: [(at: Double, member: UInt64)] = []
        let faults = scenario.faults.sorted { $0.atSeconds < $1.atSeconds }
        for fault in faults {
            for due in resumes.filter({ $0.at <= fault.atSeconds }).sorted(by: { $0.at < $1.at }) {
                try await sleep(until: due.at, since: start)
                cluster.resume(due.member)
                timeline.append(FaultRecord(seconds: seconds(since: start), action: "resume", member: due.member))
                progress(String(format: "%6.2f s  resumed member %llu", seconds(since: start), due.member))
            }
            resumes.removeAll { $0.at <= fault.atSeconds }
            try await sleep(until: fault.atSeconds, since: start)
            if fault.kind == .restart {
                for id in cluster.ids where !cluster.isRunning(id) {
                    try cluster.start(id)
                    timeline.append(FaultRecord(seconds: seconds(since: start), action: "restart", member: id))
                    progress(String(format: "%6.2f s  restarted member %llu", seconds(since: start), id))
                }
                continue
            }
            let target = await choose(fault.target ?? .random, cluster)
            guard let target else {
                progress(String(format: "%6.2f s  no %@ to %@; skipped", seconds(since: start), fault.target?.rawValue ?? "member", fault.kind.rawValue))
                continue
            }
            switch fault.kind {
            case .kill: cluster.kill9(target)
            case .pause:
                cluster.pause(target)
                if let duration = fault.durationSeconds { resumes.append((fault.atSeconds + duration, target)) }
            case .restart: break
            }
            timeline.append(FaultRecord(seconds: seconds(since: start), action: fault.kind.rawValue, member: target))
            progress(String(format: "%6.2f s  %@ member %llu (%@)", seconds(since: start), fault.kind.rawValue, target, fault.target?.rawValue ?? ""))
        }
        for due in resumes.sorted(by: { $0.at < $1.at }) where due.at < scenario.durationSeconds {
            try await sleep(until: due.at, since: start)
            cluster.resume(due.member)
            timeline.append(FaultRecord(seconds: seconds(since: start), action: "resume", member: due.member))
            progress(String(format: "%6.2f s  resumed member %llu", seconds(since: start), due.member))
        }
        // Faults end a little before the workload does, so that recovery is measured under load.
        try await sleep(until: max(scenario.durationSeconds - scenario.recoveryBoundSeconds, faults.last?.atSeconds ?? 0), since: start)
        return timeline
    }

    private func sleep(until offset: Double, since start: UInt64) async throws {
        let due = start + UInt64(offset * 1e9)
        let now = Workload.now()
        if due > now { try await Task.sleep(nanoseconds: due - now) }
    }

    private func choose(_ target: Scenario.Fault.Target, _ cluster: ScratchCluster) async -> UInt64? {
        let live = cluster.ids.filter { cluster.isRunning($0) && !cluster.paused.contains($0) }
        let leader = await cluster.leader()
        switch target {
        case .leader: return leader != 0 ? leader : nil
        case .follower: return live.filter { $0 != leader }.randomElement()
        case .random: return live.randomElement()
        }
    }

    private func waitForLeader(_ cluster: ScratchCluster, seconds: Double) async -> UInt64 {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let leader = await cluster.leader()
            if leader != 0 { return leader }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return 0
    }

    // MARK: Checks

    /// After each fault and after the heal, writes must be acknowledged again within the
    /// scenario's bound; the worst of these waits is the drill's unavailability.
    private func availability(_ events: [HistoryEvent], healedAt: UInt64, faults: [FaultRecord], start: UInt64) -> (Verdict.Check, Double?) {
        let writes = events.filter { $0.type == .ok && $0.f != "get" }.map(\.time).sorted()
        let moments = faults.filter { $0.action == "kill" || $0.action == "pause" }.map { start + UInt64($0.seconds * 1e9) } + [healedAt]
        var worst: UInt64 = 0
        for moment in moments {
            guard let next = writes.first(where: { $0 >= moment }) else {
                return (.init(name: "available", passed: false,
                              detail: String(format: "no write was acknowledged after %.3f s", Double(moment - start) / 1e9)), nil)
            }
            worst = max(worst, next - moment)
        }
        let longest = zip(writes, writes.dropFirst()).map { $1 - $0 }.max() ?? 0
        return (.init(name: "available", passed: Double(worst) / 1e9 <= scenario.recoveryBoundSeconds,
                      detail: String(format: "worst unavailability %.3f s after a fault or the heal (bound %.1f s); longest stretch without an acknowledged write %.3f s",
                                     Double(worst) / 1e9, scenario.recoveryBoundSeconds, Double(longest) / 1e9)),
                Double(worst) / 1e9)
    }

    /// Every key read once more, linearizably, after the workload: part of the history, so that
    /// an acknowledged write missing at the end shows as a violation.
    private func readEveryKey(fronts: [Endpoint], tls: ClientTLSFiles, history: HistoryLog) async -> Verdict.Check {
        guard let pool = try? FrontPool(fronts, tls: tls) else { return .init(name: "final reads", passed: false, detail: "no front") }
        var failures = 0
        let keys = Set(history.all.map(\.key)).sorted()
        for key in keys {
            let process = history.newProcess()
            history.record(HistoryEvent(process: process, type: .invoke, f: "get", key: key, value: nil, time: Workload.now()))
            var request = Crm_V1_GetRequest()
            request.key = Data(key.utf8)
            var options = CallOptions.defaults
            options.timeout = .seconds(10)
            if let response = try? await pool.get(request, options: options) {
                let value = response.found ? String(decoding: response.value, as: UTF8.self) : nil
                history.record(HistoryEvent(process: process, type: .ok, f: "get", key: key, value: value, time: Workload.now()))
            } else {
                failures += 1
                history.record(HistoryEvent(process: process, type: .fail, f: "get", key: key, value: nil, time: Workload.now()))
            }
        }
        await pool.close()
        return .init(name: "final reads", passed: failures == 0, detail: "\(keys.count - failures) of \(keys.count) keys read back after the run")
    }

    /// Every member on the same applied index and state hash (within 30 s).
    private func convergence(_ cluster: ScratchCluster) async -> Verdict.Check {
        let deadline = Date().addingTimeInterval(30)
        var last = ""
        while Date() < deadline {
            var states: [String] = []
            for id in cluster.ids {
                guard let status = await cluster.status(id, timeout: .seconds(5)) else { states.append("\(id): no answer"); continue }
                states.append("\(id): \(status.appliedIndex)/\(status.stateHash.prefix(16))")
            }
            last = states.joined(separator: ", ")
            let distinct = Set(states.map { $0.split(separator: " ", maxSplits: 1).last.map(String.init) ?? "" })
            if distinct.count == 1 && !last.contains("no answer") {
                return .init(name: "members converged", passed: true, detail: "all \(cluster.ids.count) members at applied/hash \(distinct.first!)")
            }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
        return .init(name: "members converged", passed: false, detail: "after 30 s: \(last)")
    }

    // MARK: Report

    private func write(history: [HistoryEvent], timeline: [FaultRecord], verdict: Verdict, start: UInt64, cluster: ScratchCluster) throws {
        try (history.map { event -> String in
            var shifted = event
            shifted.time = event.time - min(event.time, start)
            return shifted.json
        }.joined(separator: "\n") + "\n").write(toFile: report + "/history.jsonl", atomically: true, encoding: .utf8)
        try timeline.map { String(format: "%.3f %@%@", $0.seconds, $0.action, $0.member.map { " member \($0)" } ?? "") }
            .joined(separator: "\n").appending("\n").write(toFile: report + "/faults.txt", atomically: true, encoding: .utf8)
        try throughput(history, start: start).write(toFile: report + "/throughput.csv", atomically: true, encoding: .utf8)
        for id in cluster.ids {
            try? FileManager.default.copyItem(atPath: cluster.logPath(id), toPath: report + "/node-\(id).log")
        }
        // The scratch cluster (data, certificates, keys) goes; its logs stay in the report.
        try? FileManager.default.removeItem(atPath: cluster.directory)
        let summary: [String: Any] = [
            "scenario": scenario.name, "passed": verdict.passed, "operations_checked": verdict.operationsChecked,
            "worst_unavailability_s": verdict.worstUnavailabilitySeconds ?? -1,
            "checks": verdict.checks.map { ["name": $0.name, "passed": $0.passed, "detail": $0.detail] },
            "faults": timeline.map { ["at_s": $0.seconds, "action": $0.action, "member": $0.member.map { Int($0) } ?? 0] },
        ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: report + "/summary.json"))
    }

    /// Per second: operations that ended ok, failed and indeterminate, and the p50/p99 latency of the ok ones.
    private func throughput(_ history: [HistoryEvent], start: UInt64) -> String {
        var invoked: [Int: UInt64] = [:]
        var buckets: [Int: (ok: Int, fail: Int, info: Int, latencies: [UInt64])] = [:]
        for event in history {
            if event.type == .invoke { invoked[event.process] = event.time; continue }
            let second = Int((event.time - min(event.time, start)) / 1_000_000_000)
            var bucket = buckets[second] ?? (0, 0, 0, [])
            switch event.type {
            case .ok:
                bucket.ok += 1
                if let began = invoked[event.process] { bucket.latencies.append(event.time - began) }
            case .fail: bucket.fail += 1
            case .info: bucket.info += 1
            case .invoke: break
            }
            buckets[second] = bucket
        }
        var lines = ["second,ok,fail,info,p50_ms,p99_ms"]
        for second in (buckets.keys.min() ?? 0)...(buckets.keys.max() ?? 0) {
            let bucket = buckets[second] ?? (0, 0, 0, [])
            let sorted = bucket.latencies.sorted()
            func percentile(_ p: Double) -> String {
                sorted.isEmpty ? "" : String(format: "%.2f", Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6)
            }
            lines.append("\(second),\(bucket.ok),\(bucket.fail),\(bucket.info),\(percentile(0.5)),\(percentile(0.99))")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
