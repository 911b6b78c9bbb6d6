import CRMClient
import CRMProto
import ClusterHarness
import Dispatch
import FaultFile
import Foundation
import GRPCCore

/// One drill: its cluster (fresh, or an existing one), the workload, the scenario's faults on
/// schedule, the heal, the recovery, the final reads, and the judgement; everything written to
/// the report directory.
struct Drill {
    let scenario: Scenario
    let report: String
    let binaries: URL
    let repository: URL
    /// An existing cluster's `cluster.json`; nil for a fresh scratch cluster.
    var clusterFile: String? = nil
    let progress: (String) -> Void

    func run() async throws -> Verdict {
        try FileManager.default.createDirectory(atPath: report, withIntermediateDirectories: true)
        ProcessCluster.stopOnSignals(message: "crm-chaos: interrupted; the drill's members were stopped")
        let (cluster, proxies) = try await makeCluster()
        cluster.register()
        defer {
            cluster.stopAll()
            cluster.unregister()
        }
        if let bug = scenario.plantedBug {
            for id in cluster.ids { try cluster.setFault(id, \.plantedBug, DrillBug(rawValue: bug)) }
        }
        // Where each member's log stood before the drill (an existing cluster's logs go back further).
        let logStarts = Dictionary(
            uniqueKeysWithValues: cluster.ids.map { id in
                (id, ((try? FileManager.default.attributesOfItem(atPath: cluster.logPath(id)))?[.size] as? Int) ?? 0)
            })
        if cluster.owned { for id in cluster.ids { try cluster.start(id) } }
        guard await waitForLeader(cluster, seconds: 30) != 0 else {
            throw ChaosError("the cluster elected no leader in 30 s; see \(report)/node-*.log")
        }
        let start = Workload.now()
        let history = HistoryLog()
        let ledger = WorkloadLedger()
        let namespace = cluster.owned ? "" : "chaos/\(CRMChaos.stamp())/"
        let workload = Workload(
            clients: scenario.clients, namespace: namespace, keys: scenario.keys, fronts: cluster.fronts,
            tls: cluster.applicationTLS,
            history: history, ledger: ledger, timeout: .milliseconds(Int64((scenario.clientTimeoutSeconds ?? 6) * 1000))
        )
        let injector = FaultInjector(
            cluster: cluster, proxies: proxies, start: start, pinning: workload.pinning, progress: progress)
        injector.reportDirectory = report
        if scenario.plantedBug != nil {
            try await injector.confirmHooks(within: 10)
            progress("planted bug \(scenario.plantedBug!) switched on in every member")
        }
        progress(
            "cluster of \(cluster.ids.count) up\(proxies != nil ? " (proxies between members)" : ""); running \(scenario.name) for \(scenario.durationSeconds) s with \(scenario.clients) clients"
        )

        var records = RecordWorkload(
            clients: scenario.recordClients ?? 0, fronts: cluster.fronts, tls: cluster.applicationTLS,
            namespace: namespace.replacingOccurrences(of: "/", with: "."),
            timeout: .milliseconds(Int64((scenario.clientTimeoutSeconds ?? 6) * 1000)))
        if records.clients > 0 {
            // Records are read and written by a signed-in user with every right on them.
            guard cluster.owned else {
                throw ChaosError("the records workload runs on a scratch cluster (it bootstraps the first user)")
            }
            let application = cluster.applicationName
            injector.adminToken = try await cluster.signInRecordsUser(
                clients: [application], principals: [application])
            records.bearerToken = cluster.bearerTokens.withLock { $0[application] }
        }
        let end = start + UInt64(scenario.durationSeconds * 1e9)
        async let load: Void = workload.run(until: end)
        async let recordLoad: Void = records.clients > 0 ? records.run(until: end) : ()
        // Faults end a little before the workload does, so that recovery is measured under load.
        let lastFault = scenario.faults.map(\.atSeconds).max() ?? 0
        try await injector.run(
            scenario.faults, until: max(scenario.durationSeconds - scenario.recoveryBoundSeconds, lastFault))
        try injector.heal()
        try await load
        try await recordLoad
        await injector.finishCollector()
        progress("workload done: \(history.all.count) events; checking")

        var verdict = Verdict()
        let (available, worst) = availability(history.all, faults: injector.timeline, start: start)
        verdict.checks.append(available)
        verdict.worstUnavailabilitySeconds = worst
        let final = await readEveryKey(workload: workload, tls: cluster.applicationTLS, history: history)
        verdict.checks.append(final.check)
        verdict.checks.append(Judge.uniqueWrites(ledger.snapshot, present: final.unique))
        verdict.checks.append(
            Judge.counter(ledger.snapshot, final: final.values[workload.counterKey] ?? nil, key: workload.counterKey))
        let (linearizable, checked) = Judge.linearizability(history.all)
        verdict.checks.append(linearizable)
        verdict.operationsChecked = checked
        verdict.checks += injector.checks
        verdict.checks.append(await convergence(cluster))
        if records.clients > 0 {
            let seen = records.ledger.snapshot
            verdict.checks.append(RecordWorkload.versionsInOrder(seen.observations))
            verdict.checks.append(
                RecordWorkload.readsComplete(seen.observations, records.ledger.readsSnapshot))
            verdict.checks.append(await records.createsOnce(seen.creates))
            verdict.checks.append(await crmCheck(cluster))
        }
        // No member may crash (a Swift runtime trap or a signal backtrace), whatever the scenario.
        verdict.checks.append(
            logsClean(
                cluster, ["Program crashed", "Fatal error:"] + (scenario.logsMustNotContain ?? []), from: logStarts))
        await cluster.closeConnections()
        await proxies?.shutdown()
        cluster.stopAll()
        try write(history: history.all, timeline: injector.timeline, verdict: verdict, start: start, cluster: cluster)
        return verdict
    }

    private func makeCluster() async throws -> (ProcessCluster, LinkProxies?) {
        guard let clusterFile else {
            return try await ProcessCluster.drill(
                nodes: scenario.nodes, directory: report + "/cluster", binaries: binaries, repository: repository,
                proxied: scenario.needsProxies)
        }
        let needScratch = scenario.faults.filter {
            $0.needsProxies || $0.needsFaultHook || $0.kind == .damage || $0.kind == .repair
        }.map(\.kind.rawValue)
        guard needScratch.isEmpty && scenario.plantedBug == nil else {
            throw ChaosError(
                "\(scenario.name) uses \(Set(needScratch + (scenario.plantedBug == nil ? [] : ["planted_bug"])).sorted().joined(separator: ", ")), which only a fresh scratch cluster has (proxies between members, the debug fault hook, its data directories); run it without --cluster"
            )
        }
        let cluster: ProcessCluster
        do {
            cluster = try ProcessCluster(adopting: clusterFile, binaries: binaries)
        } catch {
            throw ChaosError("\(error)")
        }
        for id in cluster.ids where !cluster.isRunning(id) {
            throw ChaosError("member \(id) of \(clusterFile) is not running (no live pid in its pid file)")
        }
        guard cluster.ids.count == scenario.nodes else {
            throw ChaosError(
                "\(scenario.name) is written for \(scenario.nodes) members; \(clusterFile) has \(cluster.ids.count)")
        }
        return (cluster, nil)
    }

    private func waitForLeader(_ cluster: ProcessCluster, seconds: Double) async -> UInt64 {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let leader = await cluster.leader()
            if leader != 0 { return leader }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return 0
    }

    // MARK: Checks

    /// `crm check` on every running member: indexes agree with records, subject keys with persons.
    private func crmCheck(_ cluster: ProcessCluster) async -> Verdict.Check {
        var details: [String] = []
        var passed = true
        for id in cluster.ids {
            guard let connection = cluster.adminConnection(id) else { continue }
            do {
                let report = try await connection.admin.crmCheck(Crm_V1_CRMCheckRequest())
                details.append("member \(id): \(report.records) records, \(report.problems.count) problems")
                if !report.problems.isEmpty {
                    passed = false
                    details.append(contentsOf: report.problems.prefix(3).map { "member \(id): \($0)" })
                }
            } catch {
                passed = false
                details.append("member \(id): the check failed: \(error)")
            }
        }
        return Verdict.Check(
            name: "crm check", passed: passed && !details.isEmpty, detail: details.joined(separator: "; "))
    }

    /// After each disruptive fault and after the heal, writes must flow again within the
    /// scenario's bound. The unavailability after a moment is the longest wait for the next
    /// acknowledged write counted from the moment or from the write before, whichever is later,
    /// over the writes up to the next moment (so a write that slipped through just after the
    /// fault does not hide the election that followed).
    private func availability(
        _ events: [HistoryEvent], faults: [FaultInjector.Record], start: UInt64
    ) -> (Verdict.Check, Double?) {
        let writes = events.filter { $0.type == .ok && $0.f != "get" }.map(\.time).sorted()
        let moments = faults.filter(\.disruptive).map { (time: start + UInt64($0.seconds * 1e9), action: $0.action) }
        var worst: UInt64 = 0
        var worstAfter = ""
        for (index, moment) in moments.enumerated() {
            let until = index + 1 < moments.count ? moments[index + 1].time : UInt64.max
            guard writes.contains(where: { $0 >= moment.time }) else {
                return (
                    .init(
                        name: "available", passed: false,
                        detail: String(
                            format: "no write was acknowledged after %@ at %.3f s", moment.action,
                            Double(moment.time - start) / 1e9)), nil
                )
            }
            var previous = moment.time
            for write in writes where write >= moment.time {
                if write - previous > worst { (worst, worstAfter) = (write - previous, moment.action) }
                previous = write
                if write >= until { break }
            }
        }
        let longest = zip(writes, writes.dropFirst()).map { $1 - $0 }.max() ?? 0
        return (
            .init(
                name: "available", passed: Double(worst) / 1e9 <= scenario.recoveryBoundSeconds,
                detail: String(
                    format:
                        "worst unavailability %.3f s (after %@; bound %.1f s); longest stretch without an acknowledged write %.3f s; %d writes acknowledged",
                    Double(worst) / 1e9, worstAfter, scenario.recoveryBoundSeconds, Double(longest) / 1e9, writes.count)
            ),
            Double(worst) / 1e9
        )
    }

    struct FinalReads {
        var check: Verdict.Check
        /// Every key of the history but the unique ones, as read at the end (nil: absent).
        var values: [String: String?]
        /// The unique keys present at the end (nil: the range could not be read).
        var unique: Set<String>?
    }

    /// Every key read once more, linearizably, after the workload: part of the history, so that
    /// an acknowledged write missing at the end shows as a violation. The unique keys are read
    /// by a range over their prefix, which also finds any that nobody wrote.
    private func readEveryKey(workload: Workload, tls: ClientTLSFiles, history: HistoryLog) async -> FinalReads {
        guard let pool = try? FrontPool(workload.fronts, tls: tls) else {
            return FinalReads(
                check: .init(name: "final reads", passed: false, detail: "no front"), values: [:], unique: nil)
        }
        var failures = 0
        var values: [String: String?] = [:]
        let keys = Set(history.all.map(\.key)).filter { !$0.hasPrefix(workload.uniquePrefix) }.sorted()
        for key in keys {
            let process = history.newProcess()
            history.record(
                HistoryEvent(process: process, type: .invoke, f: "get", key: key, value: nil, time: Workload.now()))
            var request = Crm_V1_GetRequest()
            request.key = Data(key.utf8)
            if let response = try? await pool.get(request, options: FaultInjector.options(seconds: 10)) {
                let value = response.found ? String(decoding: response.value, as: UTF8.self) : nil
                values[key] = .some(value)
                history.record(
                    HistoryEvent(process: process, type: .ok, f: "get", key: key, value: value, time: Workload.now()))
            } else {
                failures += 1
                history.record(
                    HistoryEvent(process: process, type: .fail, f: "get", key: key, value: nil, time: Workload.now()))
            }
        }
        let unique = await rangeKeys(pool, prefix: workload.uniquePrefix)
        await pool.close()
        let detail =
            "\(keys.count - failures) of \(keys.count) keys read back after the run"
            + (unique == nil ? "; the unique keys' range could not be read" : "")
        return FinalReads(
            check: .init(name: "final reads", passed: failures == 0 && unique != nil, detail: detail), values: values,
            unique: unique)
    }

    /// Every key under `prefix` (linearizable range reads, a page at a time, at most 1,000 pages).
    private func rangeKeys(_ pool: FrontPool, prefix: String) async -> Set<String>? {
        var keys: Set<String> = []
        var from = Data(prefix.utf8)
        var end = Data(prefix.utf8)
        end[end.count - 1] += 1
        for _ in 0..<1000 {
            var request = Crm_V1_RangeRequest()
            request.from = from
            request.to = end
            request.limit = 1000
            guard let page = try? await pool.range(request, options: FaultInjector.options(seconds: 10)) else {
                return nil
            }
            for pair in page.pairs { keys.insert(String(decoding: pair.key, as: UTF8.self)) }
            guard page.more, let last = page.pairs.last else { return keys }
            from = last.key + Data([0])
        }
        return nil
    }

    /// Every member on the same applied index and state hash (within 30 s).
    private func convergence(_ cluster: ProcessCluster) async -> Verdict.Check {
        let deadline = Date().addingTimeInterval(30)
        var last = ""
        while Date() < deadline {
            var states: [String] = []
            for id in cluster.ids {
                guard let status = await cluster.status(id, timeout: .seconds(5), hash: true) else {
                    states.append("\(id): no answer"); continue
                }
                states.append("\(id): \(status.appliedIndex)/\(status.stateHash.prefix(16))")
            }
            last = states.joined(separator: ", ")
            let distinct = Set(states.map { $0.split(separator: " ", maxSplits: 1).last.map(String.init) ?? "" })
            if distinct.count == 1 && !last.contains("no answer") {
                return .init(
                    name: "members converged", passed: true,
                    detail: "all \(cluster.ids.count) members at applied/hash \(distinct.first!)")
            }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
        return .init(name: "members converged", passed: false, detail: "after 30 s: \(last)")
    }

    /// No member logged any of the scenario's forbidden lines (each member's log from this drill).
    private func logsClean(
        _ cluster: ProcessCluster, _ forbidden: [String], from starts: [UInt64: Int]
    ) -> Verdict.Check {
        var found: [String] = []
        for id in cluster.ids {
            let data = FileManager.default.contents(atPath: cluster.logPath(id)) ?? Data()
            let log = String(decoding: data.dropFirst(min(starts[id] ?? 0, data.count)), as: UTF8.self)
            for text in forbidden {
                let count = log.components(separatedBy: text).count - 1
                if count > 0 { found.append("member \(id) logged \"\(text)\" \(count) times") }
            }
        }
        return .init(
            name: "logs clean", passed: found.isEmpty,
            detail: found.isEmpty
                ? "no member logged " + forbidden.map { "\"\($0)\"" }.joined(separator: " or ")
                : found.joined(separator: "; "))
    }

    // MARK: Report

    private func write(
        history: [HistoryEvent], timeline: [FaultInjector.Record], verdict: Verdict, start: UInt64,
        cluster: ProcessCluster
    ) throws {
        try
            (history.map { event -> String in
                var shifted = event
                shifted.time = event.time - min(event.time, start)
                return shifted.json
            }.joined(separator: "\n") + "\n").write(
                toFile: report + "/history.jsonl", atomically: true, encoding: .utf8)
        try timeline.map { record in
            String(
                format: "%8.3f s  %@%@%@", record.seconds, record.action,
                record.members.isEmpty ? "" : " " + record.members.map(String.init).joined(separator: ","),
                record.detail.isEmpty ? "" : "  (\(record.detail))")
        }
        .joined(separator: "\n").appending("\n").write(
            toFile: report + "/faults.txt", atomically: true, encoding: .utf8)
        try throughput(history, start: start).write(
            toFile: report + "/throughput.csv", atomically: true, encoding: .utf8)
        for id in cluster.ids {
            try? FileManager.default.copyItem(atPath: cluster.logPath(id), toPath: report + "/node-\(id).log")
        }
        // The scratch cluster (data, certificates, keys) goes; its logs stay in the report.
        if cluster.owned { try? FileManager.default.removeItem(atPath: cluster.directory) }
        let summary: [String: Any] = [
            "scenario": scenario.name, "passed": verdict.passed, "operations_checked": verdict.operationsChecked,
            "worst_unavailability_s": verdict.worstUnavailabilitySeconds ?? -1,
            "checks": verdict.checks.map { ["name": $0.name, "passed": $0.passed, "detail": $0.detail] },
            "faults": timeline.map {
                ["at_s": $0.seconds, "action": $0.action, "members": $0.members.map { Int($0) }, "detail": $0.detail]
            },
            "planted_bug": scenario.plantedBug ?? NSNull(),
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
                sorted.isEmpty
                    ? ""
                    : String(format: "%.2f", Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6)
            }
            lines.append("\(second),\(bucket.ok),\(bucket.fail),\(bucket.info),\(percentile(0.5)),\(percentile(0.99))")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
