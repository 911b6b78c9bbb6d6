import CRMClient
import CRMProto
import ClusterHarness
import FaultFile
import Foundation
import GRPCCore

/// Applies a scenario's faults to a drill cluster at their times, undoes the temporary ones
/// after their duration (or at the heal), and keeps the timeline and what damage drills found.
final class FaultInjector: @unchecked Sendable {
    struct Record: Sendable {
        var seconds: Double
        var action: String
        var members: [UInt64]
        var detail: String = ""
        /// Whether this disrupted the cluster (availability is measured after it).
        var disruptive: Bool
    }

    private struct Undo {
        var at: Double
        var label: String
        var members: [UInt64]
        var run: () throws -> Void
    }

    let cluster: ProcessCluster
    /// The links between members, when the drill's cluster has them (network faults).
    let linkProxies: LinkProxies?
    let start: UInt64
    let progress: (String) -> Void
    private(set) var timeline: [Record] = []
    /// Checks the damage and repair faults produced (damage detected, member repaired).
    var checks: [Verdict.Check] = []
    private var undos: [Undo] = []
    var damaged: [UInt64] = []
    /// The administrator's session (sign-in drills create users with it).
    var adminToken: String?
    /// Where the drill writes its report (a collector keeps its copy there).
    var reportDirectory = "."
    /// `crmctl audit pull --follow` and its copy's directory, while one runs.
    var collector: (process: Process, directory: String)?
    private var hookChecked: Set<UInt64> = []

    /// Where pinned clients go (set by partitions with `pin_clients`).
    let pinning: Workload.Pinning?

    init(
        cluster: ProcessCluster, proxies: LinkProxies?, start: UInt64, pinning: Workload.Pinning? = nil,
        progress: @escaping (String) -> Void
    ) {
        self.cluster = cluster
        linkProxies = proxies
        self.start = start
        self.pinning = pinning
        self.progress = progress
    }

    var seconds: Double { Double(Workload.now() - start) / 1e9 }

    func note(_ action: String, _ members: [UInt64], _ detail: String = "", disruptive: Bool) {
        timeline.append(
            Record(seconds: seconds, action: action, members: members, detail: detail, disruptive: disruptive))
        let who =
            members.isEmpty
            ? "" : " member" + (members.count > 1 ? "s " : " ") + members.map(String.init).joined(separator: ", ")
        progress(String(format: "%6.2f s  %@%@%@", seconds, action, who, detail.isEmpty ? "" : " (\(detail))"))
    }

    /// Runs the faults in time order, with the undos that fall due between them, until `end`.
    func run(_ faults: [Scenario.Fault], until end: Double) async throws {
        var pending = faults.sorted { $0.atSeconds < $1.atSeconds }
        while true {
            let nextUndo = undos.indices.min { undos[$0].at < undos[$1].at }
            let undoAt = nextUndo.map { undos[$0].at } ?? .infinity
            let faultAt = pending.first?.atSeconds ?? .infinity
            guard min(undoAt, faultAt) < end else { break }
            if undoAt <= faultAt, let nextUndo {
                try await sleep(until: undoAt)
                let undo = undos.remove(at: nextUndo)
                try undo.run()
                note(undo.label, undo.members, disruptive: false)
            } else {
                let fault = pending.removeFirst()
                try await sleep(until: fault.atSeconds)
                try await apply(fault)
            }
        }
        try await sleep(until: end)
    }

    /// Undoes every temporary fault now, resumes the paused and starts every stopped member.
    func heal() throws {
        for undo in undos.sorted(by: { $0.at < $1.at }) {
            try undo.run()
            note(undo.label, undo.members, disruptive: false)
        }
        undos = []
        for id in cluster.paused.sorted() {
            cluster.resume(id)
            note("resume", [id], disruptive: false)
        }
        for id in cluster.ids where !cluster.isRunning(id) {
            try cluster.start(id)
            note("restart", [id], disruptive: false)
        }
        note("healed", [], disruptive: true)
    }

    private func sleep(until offset: Double) async throws {
        let due = start + UInt64(offset * 1e9)
        let now = Workload.now()
        if due > now { try await Task.sleep(nanoseconds: due - now) }
    }

    private func undoLater(
        _ fault: Scenario.Fault, _ label: String, _ members: [UInt64], _ run: @escaping () throws -> Void
    ) {
        let at = fault.durationSeconds.map { fault.atSeconds + $0 } ?? .infinity
        undos.append(Undo(at: at, label: label, members: members, run: run))
    }

    // MARK: Faults

    private func apply(_ fault: Scenario.Fault) async throws {
        switch fault.kind {
        case .restart:
            let stopped = cluster.ids.filter { !cluster.isRunning($0) }
            let hadQuorum = hasQuorum
            for id in stopped { try cluster.start(id) }
            // After a kill that took the quorum, availability is measured from the restart.
            note("restart", stopped, disruptive: !hadQuorum)
            return
        case .heal:
            try heal()
            return
        case .repair:
            try await repairDamaged()
            return
        case .credentialStuffing:
            await credentialStuffing()
            return
        case .passwordSpraying:
            await passwordSpraying()
            return
        case .totpReplay:
            await totpReplay()
            return
        case .auditCollector:
            try startCollector(into: reportDirectory + "/collector")
            return
        default: break
        }
        let targets = await choose(fault.target ?? .random, count: fault.count ?? 1)
        guard !targets.isEmpty else {
            note(
                "skipped \(fault.kind.rawValue)", [], "no \(fault.target?.rawValue ?? "member") to target",
                disruptive: false)
            return
        }
        switch fault.kind {
        case .kill:
            for id in targets { cluster.kill9(id) }
            note("kill", targets, fault.target?.rawValue ?? "", disruptive: hasQuorum)
        case .pause:
            for id in targets { cluster.pause(id) }
            note("pause", targets, fault.target?.rawValue ?? "", disruptive: true)
            undoLater(fault, "resume", targets) { [cluster] in for id in targets { cluster.resume(id) } }
        case .partition:
            try partition(fault, around: targets[0])
        case .network:
            try slowLinks(fault, of: fault.target == .all ? nil : targets[0])
        case .slowFsync:
            try setHookFault(
                fault, targets, field: \.fsyncDelayMilliseconds, value: fault.delayMilliseconds!, label: "slow fsync",
                detail: "+\(fault.delayMilliseconds!) ms per synced write")
        case .diskFull:
            try setHookFault(
                fault, targets, field: \.freeDiskBytes, value: 0, label: "disk full", detail: "0 bytes free")
        case .clockJump:
            let offset = fault.offsetSeconds!
            try setHookFault(
                fault, targets, field: \.clockOffsetMilliseconds, value: Int64(offset * 1000), label: "clock jump",
                detail: String(format: "%+.0f s", offset))
        case .damage:
            try await damage(targets[0], file: fault.file!)
        case .auditTamper:
            try await tamperAudit(targets[0])
        case .restart, .heal, .repair, .credentialStuffing, .passwordSpraying, .totpReplay, .auditCollector:
            break
        }
    }

    /// Whether a majority of the members runs.
    private var hasQuorum: Bool { cluster.ids.filter { cluster.isRunning($0) }.count > cluster.ids.count / 2 }

    private func choose(_ target: Scenario.Fault.Target, count: Int) async -> [UInt64] {
        let live = cluster.ids.filter { cluster.isRunning($0) && !cluster.paused.contains($0) && !damaged.contains($0) }
        let leader = await cluster.leader()
        switch target {
        case .leader:
            guard leader != 0 else { return [] }
            return [leader] + live.filter { $0 != leader }.shuffled().prefix(count - 1)
        case .follower: return Array(live.filter { $0 != leader }.shuffled().prefix(count))
        case .random: return Array(live.shuffled().prefix(count))
        case .all: return cluster.ids
        }
    }

    // MARK: Network

    private func proxies() throws -> LinkProxies {
        guard let proxies = linkProxies else {
            throw ChaosError("this cluster has no proxies between its members (network faults need a scratch cluster)")
        }
        return proxies
    }

    /// Cuts links as the shape says; the cut is undone after `duration_s` or at the heal.
    private func partition(_ fault: Scenario.Fault, around target: UInt64) throws {
        let proxies = try proxies()
        let others = cluster.ids.filter { $0 != target }.shuffled()
        var cut: [(UInt64, UInt64)] = []
        var detail: String
        func sever(_ a: [UInt64], _ b: [UInt64]) {
            for x in a { for y in b { cut += [(x, y), (y, x)] } }
        }
        switch fault.shape! {
        case .isolate:
            sever([target], others)
            detail = "isolate \(target) from \(others.sorted())"
        case .minority:
            let minority = [target] + others.prefix((cluster.ids.count - 1) / 2 - 1)
            let majority = cluster.ids.filter { !minority.contains($0) }
            sever(minority, majority)
            detail = "minority \(minority.sorted()) | majority \(majority.sorted())"
        case .bridge:
            let bridge = others[0]
            let rest = Array(others.dropFirst())
            let sideA = [target] + rest.prefix((rest.count - 1) / 2)
            let sideB = rest.filter { !sideA.contains($0) }
            sever(sideA, sideB)
            detail = "\(sideA.sorted()) | \(sideB.sorted()), bridged by \(bridge)"
        case .oneWay:
            for other in others { cut.append((target, other)) }
            detail = "messages from \(target) to \(others.sorted()) are lost; theirs arrive"
        }
        proxies.update { faults in
            for (from, to) in cut { faults.set(LinkCondition(blocked: true), from: from, to: to) }
        }
        if let count = fault.pinClients, let pinning, let front = cluster.ids.firstIndex(of: target) {
            pinning.pin(front: front, clients: count)
            detail += "; \(count) clients pinned to \(target)'s front"
        }
        note("partition \(fault.shape!.rawValue)", [target], detail, disruptive: true)
        let pinning = fault.pinClients == nil ? nil : self.pinning
        undoLater(fault, "partition healed", [target]) {
            proxies.update { faults in for (from, to) in cut { faults.set(.clear, from: from, to: to) } }
            pinning?.release()
        }
    }

    /// Delay, jitter and loss on every link of `member` (both ways), or on every link.
    private func slowLinks(_ fault: Scenario.Fault, of member: UInt64?) throws {
        let proxies = try proxies()
        let condition = LinkCondition(
            delayMilliseconds: fault.delayMilliseconds ?? 0, jitterMilliseconds: fault.jitterMilliseconds ?? 0,
            lossPercent: fault.lossPercent ?? 0)
        var links: [(UInt64, UInt64)] = []
        for from in cluster.ids {
            for to in cluster.ids where from != to && (member == nil || from == member || to == member) {
                links.append((from, to))
            }
        }
        proxies.update { faults in for (from, to) in links { faults.set(condition, from: from, to: to) } }
        let detail = String(
            format: "delay %d ms, jitter %d ms, loss %.1f %% on %@", condition.delayMilliseconds,
            condition.jitterMilliseconds,
            condition.lossPercent, member.map { "the links of \($0)" } ?? "every link")
        note("slow network", member.map { [$0] } ?? [], detail, disruptive: true)
        undoLater(fault, "network restored", member.map { [$0] } ?? []) {
            proxies.update { faults in for (from, to) in links { faults.set(.clear, from: from, to: to) } }
        }
    }

    // MARK: Fault hook

    private func setHookFault<Value: Sendable>(
        _ fault: Scenario.Fault, _ targets: [UInt64], field: WritableKeyPath<InjectedFaults, Value?> & Sendable,
        value: Value,
        label: String, detail: String
    ) throws {
        for id in targets { try cluster.setFault(id, field, value) }
        note(label, targets, detail, disruptive: true)
        undoLater(fault, "\(label) undone", targets) { [cluster] in
            for id in targets { try cluster.setFault(id, field, nil) }
        }
    }

    /// Fails the drill if a member never logged taking up its fault file: only debug builds of
    /// crm-node read one, and a drill that injected nothing must not pass as if it had.
    func confirmHooks(within seconds: Double) async throws {
        for id in cluster.ids where !hookChecked.contains(id) && cluster.faults[id] != nil && cluster.isRunning(id) {
            let deadline = Date().addingTimeInterval(seconds)
            while !cluster.tookFaults(id) && Date() < deadline { try await Task.sleep(nanoseconds: 100_000_000) }
            guard cluster.tookFaults(id) else {
                throw ChaosError(
                    "member \(id) ignored its fault file: the fault hooks exist only in debug builds of crm-node; run crm-chaos with --binaries .build/debug"
                )
            }
            hookChecked.insert(id)
        }
    }

    // MARK: Damage and repair

    /// Flushes the member's tables, kills it, flips bytes in a table file of the state machine or
    /// the Raft log, starts it again, and checks that it noticed: it raises CORRUPT (or refuses
    /// to start) and serves no data.
    private func damage(_ id: UInt64, file: Scenario.Fault.DamagedFile) async throws {
        guard cluster.owned else {
            throw ChaosError("damage needs a scratch cluster (the member's data directory)")
        }
        let data = cluster.dataDirectory(id)
        let flipped: String
        if file == .wal {
            cluster.kill9(id)
            flipped = try Self.flipBytes(inWALOf: data + "/db")
        } else {
            _ = try? await cluster.adminConnection(id)?.admin.compact(
                Crm_V1_CompactRequest(), options: Self.options(seconds: 10))
            cluster.kill9(id)
            flipped = try Self.flipBytes(inTableOf: file == .state ? "state_machine" : "raft_log", in: data + "/db")
        }
        note("damage", [id], "kill -9, \(flipped)", disruptive: true)
        damaged.append(id)
        try cluster.start(id)
        note("restart", [id], disruptive: false)
        checks.append(await detected(id, began: Date()))
    }

    /// 32 bytes inverted at offset 300 (inside the first data block) of the newest table file
    /// that names the column family.
    static func flipBytes(inTableOf family: String, in db: String) throws -> String {
        let tables = try FileManager.default.contentsOfDirectory(atPath: db).filter { $0.hasSuffix(".sst") }.sorted()
            .reversed()
        guard
            let table = tables.first(where: {
                (FileManager.default.contents(atPath: db + "/" + $0) ?? Data()).range(of: Data(family.utf8)) != nil
            })
        else {
            throw ChaosError("no table file of \(family) in \(db) (among \(tables.count) tables) to damage")
        }
        try invert32Bytes(in: db + "/" + table, at: 300)
        return "32 bytes flipped in \(family) table \(table)"
    }

    /// Inverts the 32 bytes at `offset` of `path` in place.
    private static func invert32Bytes(in path: String, at offset: UInt64) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        guard var bytes = try handle.read(upToCount: 32), bytes.count == 32 else {
            throw ChaosError("\(path) is too short to damage at \(offset)")
        }
        for index in bytes.indices { bytes[index] ^= 0xFF }
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: bytes)
    }

    /// 32 bytes inverted in the middle of the newest write-ahead log (damage before its end,
    /// not a torn tail).
    static func flipBytes(inWALOf db: String) throws -> String {
        let logs = try FileManager.default.contentsOfDirectory(atPath: db).filter { $0.hasSuffix(".log") }.sorted()
        guard let wal = logs.last,
            let size = (try FileManager.default.attributesOfItem(atPath: db + "/" + wal))[.size] as? Int, size >= 4096
        else {
            throw ChaosError("no write-ahead log of 4 KiB or more in \(db) to damage (among \(logs))")
        }
        try invert32Bytes(in: db + "/" + wal, at: UInt64(size / 2))
        return "32 bytes flipped at offset \(size / 2) of the write-ahead log \(wal) (\(size) bytes)"
    }

    /// Within 30 s the damaged member either exits refusing to open its store, or raises
    /// CORRUPT and refuses reads; a read it answers with data fails the check.
    private func detected(_ id: UInt64, began: Date) async -> Verdict.Check {
        let name = "damage detected (member \(id))"
        while Date().timeIntervalSince(began) < 30 {
            if !cluster.isRunning(id) {
                let log = (try? String(contentsOfFile: cluster.logPath(id), encoding: .utf8)) ?? ""
                // The member's last critical line says why it stopped; it must name the damage.
                let reason = log.split(separator: "\n").last { $0.contains(" critical ") }
                    .flatMap { line in
                        ["orrupt", "damaged", "unreadable", "checksum"].contains { line.contains($0) } ? line : nil
                    }
                return .init(
                    name: name, passed: reason != nil,
                    detail: String(
                        format: "refused to start after %.1f s: %@", Date().timeIntervalSince(began),
                        reason.map { line in
                            String(line[(line.range(of: "error=")?.upperBound ?? line.startIndex)...].prefix(240))
                        }
                            ?? "exited without naming damage"))
            }
            if let status = await cluster.status(id), let alarm = status.alarms.first(where: { $0.kind == .corrupt }) {
                let read = await directRead(id)
                return .init(
                    name: name, passed: read.refused,
                    detail: String(
                        format: "CORRUPT raised %.1f s after the restart (%@); a read from it: %@",
                        Date().timeIntervalSince(began),
                        String(alarm.reason.prefix(160)), read.detail))
            }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
        return .init(
            name: name, passed: false,
            detail: "member \(id) runs with damaged files and raised no CORRUPT alarm in 30 s")
    }

    /// A serializable read straight from the member's client port.
    func directRead(_ id: UInt64) async -> (refused: Bool, detail: String) {
        let endpoint = cluster.addresses(id).client
        guard
            let connection = try? MemberConnection(
                host: endpoint.host, port: endpoint.port, tls: cluster.applicationTLS)
        else {
            return (false, "no connection")
        }
        defer { Task { await connection.close() } }
        var request = Crm_V1_GetRequest()
        request.key = Data("k0".utf8)
        request.consistency = .serializable
        do {
            let response = try await connection.kv.get(request, options: Self.options(seconds: 5))
            return (false, "answered (found: \(response.found)) although damaged")
        } catch let error as RPCError {
            return (error.code == .dataLoss, "refused with \(error.code): \(error.message.prefix(100))")
        } catch {
            return (false, "\(error)")
        }
    }

    /// Repairs every damaged member from the cluster: removed from the configuration, stopped,
    /// its data moved aside, started empty with `join: true`, added as a learner (it catches
    /// up by snapshot), promoted once caught up.
    private func repairDamaged() async throws {
        for id in damaged {
            let began = Date()
            note("repair", [id], "remove, empty, re-add as learner, promote", disruptive: true)
            let outcome = await repair(id)
            checks.append(
                .init(
                    name: "repaired (member \(id))", passed: outcome == nil,
                    detail: outcome
                        ?? String(
                            format: "back as a voter, caught up by snapshot, in %.1f s", Date().timeIntervalSince(began)
                        )))
            note(outcome == nil ? "repaired" : "repair failed", [id], outcome ?? "", disruptive: false)
        }
        damaged = []
    }

    /// nil when the member is a caught-up voter again, else what went wrong.
    private func repair(_ id: UInt64) async -> String? {
        guard await onLeader({ _ = try await $0.admin.removeMember(.with { $0.id = id }, options: $1) }) else {
            return "the leader did not remove member \(id) within 20 s"
        }
        cluster.kill9(id)
        cluster.dropConnections(id)
        guard cluster.owned else { return "no data directory" }
        let data = cluster.dataDirectory(id)
        do {
            try FileManager.default.moveItem(
                atPath: data, toPath: data + ".damaged-\(Int(Date().timeIntervalSince1970))")
            try cluster.rewriteToJoin(id)
            try cluster.start(id)
        } catch {
            return "could not restart member \(id) empty: \(error)"
        }
        // A fresh snapshot first, so that the learner catches up by snapshot rather than by log.
        guard await onLeader({ _ = try await $0.admin.snapshot(Crm_V1_SnapshotRequest(), options: $1) }) else {
            return "the leader took no snapshot within 20 s"
        }
        guard await onLeader({ _ = try await $0.admin.addLearner(.with { $0.id = id }, options: $1) }) else {
            return "the leader did not add member \(id) as a learner within 20 s"
        }
        let deadline = Date().addingTimeInterval(60)
        var caughtUp = false
        while Date() < deadline && !caughtUp {
            let leader = await cluster.leader()
            if leader != 0, let status = await cluster.status(leader), let own = await cluster.status(id),
                own.snapshotIndex > 0, own.appliedIndex + 8 >= status.commitIndex
            {
                caughtUp = true
            } else {
                try? await Task.sleep(nanoseconds: 200_000_000)
            }
        }
        guard caughtUp else { return "member \(id) did not catch up by snapshot within 60 s" }
        guard await onLeader({ _ = try await $0.admin.promoteMember(.with { $0.id = id }, options: $1) }) else {
            return "the leader did not promote member \(id) within 20 s"
        }
        return nil
    }

    /// Sends an admin call to whichever member leads, again until it is accepted (20 s).
    private func onLeader(_ call: (MemberConnection, CallOptions) async throws -> Void) async -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let leader = await cluster.leader()
            if leader != 0, let connection = cluster.adminConnection(leader),
                (try? await call(connection, Self.options(seconds: 5))) != nil
            {
                return true
            }
            try? await Task.sleep(nanoseconds: 300_000_000)
        }
        return false
    }

    static func options(seconds: Int64) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = .seconds(seconds)
        return options
    }
}
