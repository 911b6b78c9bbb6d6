import AuditChain
import CRMClient
import CRMProto
import ClusterHarness
import Foundation
import GRPCCore
import Identity

/// The security drills' faults: a rewritten audit entry on one member, and attacks on sign-in
/// through an application of the attacker's own. Each adds the checks that judge it.
extension FaultInjector {
    // MARK: Audit tamper

    /// Rewrites the target's newest audit entry through the fault hook; within 30 s it must raise
    /// TAMPER, refuse a direct read, and `crmctl audit verify --all-members` must name the
    /// entry. The hook is cleared at once (a repaired member must not be rewritten again); the
    /// member counts as damaged, for `repair`.
    func tamperAudit(_ id: UInt64) async throws {
        guard
            let head = try? await cluster.adminConnection(id)?.admin.auditHead(
                Crm_V1_AuditHeadRequest(), options: Self.options(seconds: 5)), head.seq > 0
        else {
            checks.append(.init(name: "audit tamper (member \(id))", passed: false, detail: "no audit head to rewrite"))
            return
        }
        try cluster.setFault(id, \.tamperAuditSeq, head.seq)
        note("audit tamper", [id], "entry \(head.seq) rewritten in its store", disruptive: true)
        damaged.append(id)
        let began = Date()
        var raised: String?
        while raised == nil, Date().timeIntervalSince(began) < 30 {
            if let status = await cluster.status(id), let alarm = status.alarms.first(where: { $0.kind == .tamper }) {
                raised = alarm.reason
            } else {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        try cluster.setFault(id, \.tamperAuditSeq, nil)
        guard let raised else {
            checks.append(
                .init(name: "audit tamper (member \(id))", passed: false, detail: "no TAMPER alarm within 30 s"))
            return
        }
        let read = await directRead(id)
        let verify = verifyNames(entry: head.seq, member: id)
        checks.append(
            .init(
                name: "audit tamper (member \(id))", passed: read.refused && verify.named,
                detail: String(
                    format: "TAMPER after %.1f s (%@); a read from it: %@; verify: %@",
                    Date().timeIntervalSince(began), String(raised.prefix(120)), read.detail, verify.detail)))
    }

    /// Whether `crmctl audit verify --all-members` exits 1 naming the entry on the member.
    private func verifyNames(entry seq: UInt64, member: UInt64) -> (named: Bool, detail: String) {
        do {
            let file = try cluster.writeClusterFile()
            let run = try Programs.capture(
                cluster.binaries.appendingPathComponent("crmctl").path,
                ["audit", "verify", "--all-members", "--json", "--cluster", file])
            let results = (try? JSONSerialization.jsonObject(with: Data(run.output.utf8))) as? [[String: Any]] ?? []
            let problem = results.first { ($0["member"] as? Int).map(UInt64.init) == member }?["problem"] as? String
            let named = run.status == 1 && (problem?.contains("\(seq)") ?? false)
            return (named, "exit \(run.status), member \(member): \(problem ?? "no problem found")")
        } catch {
            return (false, "crmctl did not run: \(error)")
        }
    }

    // MARK: Sign-in attacks

    /// The attacker's application may assert end users' addresses (a real attacker behind a
    /// botnet, or a compromised integration).
    private func prepareAttacker() async -> String? {
        guard let leader = Optional(await cluster.leader()), leader != 0,
            let admin = cluster.adminConnection(leader)
        else { return "no leader" }
        var principal = Crm_V1_PutPrincipalRequest()
        principal.principal.name = ProcessCluster.attackerName
        principal.principal.ceiling = [ProcessCluster.recordsRole]
        principal.principal.mayAssertAddress = true
        do {
            _ = try await admin.admin.putPrincipal(principal, options: Self.options(seconds: 5))
            return nil
        } catch {
            return "the attacker's principal was not put: \(error)"
        }
    }

    /// One sign-in through front `index % members` as `client`; nil when it opened a session.
    private func attempt(
        _ index: Int, _ client: String, username: String, password: String, from address: String
    ) async -> RPCError? {
        let id = cluster.ids[index % cluster.ids.count]
        guard let connection = try? cluster.connection(id, .front, as: client) else {
            return RPCError(code: .unavailable, message: "no connection to front \(id)")
        }
        var request = Crm_V1_LoginRequest()
        request.username = username
        request.password = password
        request.clientAddress = address
        do {
            _ = try await connection.directory.login(request, options: Self.options(seconds: 5))
            return nil
        } catch let error as RPCError {
            return error
        } catch {
            return RPCError(code: .unknown, message: "\(error)")
        }
    }

    /// 80 guesses at 80 accounts, each from another address, round the fronts.
    func credentialStuffing() async {
        if let problem = await prepareAttacker() {
            checks.append(.init(name: "credential stuffing", passed: false, detail: problem))
            return
        }
        note("credential stuffing", [], "80 accounts, one guess each, 80 addresses, every front", disruptive: false)
        var opened = 0
        var refusals: [RPCError.Code: Int] = [:]
        for index in 0..<80 {
            let refusal = await attempt(
                index, ProcessCluster.attackerName, username: "customer-\(index)", password: "Winter2026!\(index)",
                from: "203.0.\(113 + index / 200).\(index % 200 + 1)")
            if let refusal { refusals[refusal.code, default: 0] += 1 } else { opened += 1 }
        }
        checks.append(
            .init(
                name: "stuffing: no account opened", passed: opened == 0,
                detail:
                    "\(opened) of 80 guesses opened a session; refusals \(refusals.map { "\($0.key): \($0.value)" })"
            ))
        // The attacker is blocked at every front, AUTH_ATTACK raised on the leader.
        let began = Date()
        var blocked = false
        var alarm = false
        while !(blocked && alarm), Date().timeIntervalSince(began) < 15 {
            let refusal = await attempt(
                Int.random(in: 0..<cluster.ids.count), ProcessCluster.attackerName, username: "customer-0",
                password: "Spring2026!", from: "203.0.113.250")
            blocked = refusal?.code == .permissionDenied && refusal?.message.contains("blocked") == true
            let leader = await cluster.leader()
            alarm = await cluster.status(leader)?.alarms.contains { $0.kind == .authAttack } ?? false
            if !(blocked && alarm) { try? await Task.sleep(for: .milliseconds(300)) }
        }
        checks.append(
            .init(
                name: "stuffing: attacker blocked", passed: blocked && alarm,
                detail: "application blocked: \(blocked), AUTH_ATTACK on the leader: \(alarm), after "
                    + String(format: "%.1f s", Date().timeIntervalSince(began))))
        let legitimate = await attempt(
            0, cluster.applicationName, username: "records-harness", password: ProcessCluster.harnessPassword,
            from: "")
        checks.append(
            .init(
                name: "stuffing: legitimate users unaffected", passed: legitimate == nil,
                detail: legitimate.map { "the workload's user was refused: \($0.code) \($0.message)" }
                    ?? "the workload's user signs in through its own application"))
    }

    /// Twelve accounts from one network round the fronts; then the workload's user, with the
    /// right password, from that network (refused at every front) and from another (signed in).
    func passwordSpraying() async {
        if let problem = await prepareAttacker() {
            checks.append(.init(name: "password spraying", passed: false, detail: problem))
            return
        }
        note("password spraying", [], "12 accounts from 198.18.7.0/24, every front", disruptive: false)
        for index in 0..<12 {
            _ = await attempt(
                index, ProcessCluster.attackerName, username: "staff-\(index)", password: "Password1!",
                from: "198.18.7.\(index + 10)")
        }
        var refusedEverywhere = true
        var details: [String] = []
        for index in cluster.ids.indices {
            let refusal = await attempt(
                index, ProcessCluster.attackerName, username: "records-harness",
                password: ProcessCluster.harnessPassword, from: "198.18.7.200")
            refusedEverywhere = refusedEverywhere && refusal?.code == .unauthenticated
            details.append("front \(cluster.ids[index]): \(refusal.map { "\($0.code)" } ?? "signed in")")
        }
        let other = await attempt(
            0, ProcessCluster.attackerName, username: "records-harness", password: ProcessCluster.harnessPassword,
            from: "198.18.9.4")
        checks.append(
            .init(
                name: "spraying: network refused at every front", passed: refusedEverywhere,
                detail: details.joined(separator: ", ")))
        checks.append(
            .init(
                name: "spraying: other networks unaffected", passed: other == nil,
                detail: other.map { "refused from another network: \($0.code) \($0.message)" } ?? "signed in"))
    }
}

// MARK: TOTP replay

extension FaultInjector {
    /// A user with a second factor signs in twice with the password (two tickets, two fronts);
    /// one fresh code is sent with both tickets at once: exactly one session opens. The code's
    /// time step is written by a conditioned transaction, so the race is decided by the log.
    func totpReplay() async {
        let name = "totp replay: one code opens one session"
        do {
            let detail = try await raceOneCode()
            checks.append(.init(name: name, passed: detail.opened == 1, detail: detail.text))
        } catch {
            checks.append(.init(name: name, passed: false, detail: "the drill could not run: \(error)"))
        }
    }

    private func raceOneCode() async throws -> (opened: Int, text: String) {
        guard let admin = adminToken else { throw ChaosError("no administrator's session") }
        let leader = await cluster.leader()
        let directory = try cluster.connection(leader, .client, as: "crmctl").directory
        let username = "second-factor-\(Int.random(in: 0..<1_000_000))"
        var create = Crm_V1_CreateUserRequest()
        create.username = username
        create.password = ProcessCluster.harnessPassword + " at first"
        create.roles = [ProcessCluster.recordsRole]
        _ = try await directory.createUser(
            create, metadata: ["authorization": "Bearer \(admin)"], options: Self.options(seconds: 5))
        let session = try await cluster.signIn(
            username, first: ProcessCluster.harnessPassword + " at first", through: "crmctl", leader: leader)
        let enrolled = try await directory.enrolSecondFactor(
            Crm_V1_EnrolSecondFactorRequest(), metadata: ["authorization": "Bearer \(session)"],
            options: Self.options(seconds: 5))
        guard let secret = Base32.decode(enrolled.secretBase32) else { throw ChaosError("the secret does not decode") }
        var confirm = Crm_V1_ConfirmSecondFactorRequest()
        confirm.code = TOTP.code(secret: secret, step: TOTP.step(atMillis: Self.nowMillis()))
        _ = try await directory.confirmSecondFactor(
            confirm, metadata: ["authorization": "Bearer \(session)"], options: Self.options(seconds: 5))
        note("totp replay", [], "\(username): one code, two tickets, two fronts at once", disruptive: false)
        let fronts = try cluster.ids.prefix(2).map { try cluster.connection($0, .front, as: "crmctl") }
        var tickets: [String] = []
        for front in fronts {
            var login = Crm_V1_LoginRequest()
            login.username = username
            login.password = ProcessCluster.harnessPassword
            let ticket = try await front.directory.login(login, options: Self.options(seconds: 5))
            guard ticket.secondFactorRequired else { throw ChaosError("a password alone opened a session") }
            tickets.append(ticket.token)
        }
        // The next step's code: within the ±1 window, above the step the confirmation used.
        let code = TOTP.code(secret: secret, step: TOTP.step(atMillis: Self.nowMillis()) + 1)
        let sessions = await withTaskGroup(of: Bool.self) { group in
            for (front, ticket) in zip(fronts, tickets) {
                group.addTask {
                    var complete = Crm_V1_CompleteLoginRequest()
                    complete.ticket = ticket
                    complete.code = code
                    return (try? await front.directory.completeLogin(complete, options: Self.options(seconds: 5)))
                        != nil
                }
            }
            var opened = 0
            for await success in group where success { opened += 1 }
            return opened
        }
        return (
            sessions,
            "\(sessions) of 2 sign-ins completed with the same code through fronts \(cluster.ids.prefix(2).map(String.init).joined(separator: " and "))"
        )
    }

    static func nowMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}

// MARK: Audit collector

extension FaultInjector {
    /// Starts `crmctl audit pull --follow` into the report directory; `finishCollector` judges it.
    func startCollector(into directory: String) throws {
        // A copy left by an earlier run in the same report directory is another cluster's chain.
        try? FileManager.default.removeItem(atPath: directory)
        let file = try cluster.writeClusterFile()
        let process = Process()
        process.executableURL = cluster.binaries.appendingPathComponent("crmctl")
        process.arguments = [
            "audit", "pull", "--to", directory, "--collector", "drill", "--follow", "--interval-ms", "200",
            "--cluster", file,
        ]
        FileManager.default.createFile(atPath: directory + ".log", contents: nil)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: directory + ".log")
        try process.run()
        collector = (process, directory)
        note("audit collector", [], "crmctl audit pull --follow", disruptive: false)
    }

    /// After the heal: the collector's copy reaches the trail's head within 20 s, every entry of
    /// it re-hashes, and the cluster holds its acknowledgement.
    func finishCollector() async {
        guard let (process, directory) = collector else { return }
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        let name = "collector: every entry reached the copy"
        let leader = await cluster.leader()
        guard
            let head = try? await cluster.adminConnection(leader)?.admin.auditHead(
                Crm_V1_AuditHeadRequest(), options: Self.options(seconds: 5))
        else {
            checks.append(.init(name: name, passed: false, detail: "no audit head from the leader"))
            return
        }
        let began = Date()
        var acknowledged: UInt64 = 0
        while Date().timeIntervalSince(began) < 20 {
            let now = try? await cluster.adminConnection(leader)?.admin.auditHead(
                Crm_V1_AuditHeadRequest(), options: Self.options(seconds: 5))
            acknowledged = now?.collectors.first { $0.name == "drill" }?.seq ?? 0
            if acknowledged >= head.seq { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        process.terminate()
        process.waitUntilExit()
        let copy = try? CollectorCopy.open(URL(fileURLWithPath: directory), collector: "drill")
        let holds = copy.map { $0.last.seq >= head.seq } ?? false
        checks.append(
            .init(
                name: name, passed: holds && acknowledged >= head.seq,
                detail:
                    "head \(head.seq); the copy holds \(copy?.entries ?? 0) entries up to \(copy?.last.seq ?? 0) and re-hashes: \(copy != nil); acknowledged \(acknowledged)"
            ))
    }
}
