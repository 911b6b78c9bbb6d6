import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Identity
import Node
import Testing

/// The TOTP second factor on real processes with `crm.mfa: required`: a new user may only enrol,
/// enrolment with crmctl, one code raced through two fronts accepted once, recovery codes once
/// each, and a step-up for role changes after ten minutes.
extension RealProcessTests {
    @Suite struct SecondFactorProcessTests {
        private let first = "correct horse battery staple"
        private let password = "a quite new passphrase"

        private func crmctl(
            _ arguments: [String], _ file: String, input: String? = nil
        ) throws -> (
            status: Int32, output: String, errors: String
        ) {
            try ProcessCluster.tool("crmctl", arguments + ["--cluster", file], input: input.map { Data($0.utf8) })
        }

        private func json(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        }

        @Test func enrolRaceRecoverAndStepUp() async throws {
            let cluster = try ProcessCluster { $0.crm?.mfa = .required }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let followers = cluster.ids.filter { $0 != leader }
            let file = try cluster.writeClusterFile()
            let token = cluster.directory + "/token"
            let signedIn = ["--token-file", token]

            #expect(try crmctl(["users", "bootstrap", "root-admin"], file, input: first + "\n").status == 0)
            #expect(try crmctl(["login", "root-admin"] + signedIn, file, input: first + "\n").status == 0)
            let changed = try crmctl(["password"] + signedIn, file, input: first + "\n" + password + "\n")
            #expect(changed.status == 0, "\(changed.errors)")

            // Without a second factor the session may only enrol one.
            let me = json(try crmctl(["whoami", "--json"] + signedIn, file).output)
            #expect(me["enrolment_only"] as? Bool == true, "\(me)")
            let refused = try crmctl(["users", "list"] + signedIn, file)
            #expect(refused.status != 0 && refused.errors.contains("enrol a second factor first"), "\(refused.errors)")

            let enrol = try crmctl(["mfa", "enrol", "--json"] + signedIn, file)
            let secretText = try #require(json(enrol.output)["secret_base32"] as? String, "\(enrol.errors)")
            let secret = try #require(Base32.decode(secretText))
            #expect(secret.count == 20)
            let uri = json(enrol.output)["provisioning_uri"] as? String ?? ""
            #expect(uri.hasPrefix("otpauth://totp/CRM:root-admin?secret=\(secretText)"), "\(uri)")
            let now = { UInt64(Date().timeIntervalSince1970 * 1000) }
            let confirmCode = TOTP.code(secret: secret, step: TOTP.step(atMillis: now()))
            let wrong = try crmctl(["mfa", "confirm"] + signedIn, file, input: "000000\n")
            #expect(wrong.status != 0, "a wrong code confirmed the enrolment")
            let confirm = try crmctl(["mfa", "confirm", "--json"] + signedIn, file, input: confirmCode + "\n")
            let recovery = json(confirm.output)["recovery_codes"] as? [String] ?? []
            #expect(recovery.count == 10, "\(confirm.output) \(confirm.errors)")
            #expect(try crmctl(["users", "list"] + signedIn, file).status == 0, "the confirmed session may act")
            let enrolled = json(try crmctl(["whoami", "--json"] + signedIn, file).output)
            #expect(
                enrolled["second_factor_enrolled"] as? Bool == true && enrolled["recovery_codes_left"] as? Int == 10)

            // The confirming code is spent: a step-up with it is refused.
            let replay = try crmctl(["mfa", "step-up"] + signedIn, file, input: confirmCode + "\n")
            #expect(replay.status != 0 && replay.errors.contains("already used"), "\(replay.errors)")

            // A password alone now gets a ticket; one code sent through two fronts at once opens one session.
            let fronts = try followers.map { try cluster.frontConnection($0, client: "crmctl") }
            var login = Crm_V1_LoginRequest()
            login.username = "root-admin"
            login.password = password
            let ticket = try await fronts[0].directory.login(login, options: ProcessCluster.shortCall)
            #expect(ticket.secondFactorRequired && ticket.token.hasPrefix("crm_t_"))
            var complete = Crm_V1_CompleteLoginRequest()
            complete.ticket = ticket.token
            complete.code = TOTP.code(secret: secret, step: TOTP.step(atMillis: now()) + 1)
            let sent = complete
            async let viaFirst = try? fronts[0].directory.completeLogin(sent, options: ProcessCluster.shortCall)
            async let viaSecond = try? fronts[1].directory.completeLogin(sent, options: ProcessCluster.shortCall)
            let opened = [await viaFirst, await viaSecond].compactMap { $0 }
            #expect(opened.count == 1, "the same code opened \(opened.count) sessions")
            #expect(opened.first?.token.hasPrefix("crm_s_") == true)
            for front in fronts { await front.close() }

            // A recovery code works once.
            let viaRecovery = try crmctl(
                ["login", "root-admin", "--recovery-code"] + signedIn, file, input: password + "\n" + recovery[2] + "\n"
            )
            #expect(viaRecovery.status == 0, "\(viaRecovery.errors)")
            let again = try crmctl(
                ["login", "root-admin", "--recovery-code", "--token-file", token + "-2"], file,
                input: password + "\n" + recovery[2] + "\n")
            #expect(again.status != 0 && again.errors.contains("wrong"), "\(again.errors)")

            // Role changes need a second factor within ten minutes.
            let made = try crmctl(
                ["users", "create", "bob", "--role", "sales-rep", "--json"] + signedIn, file, input: first + "\n")
            let bob = try #require(
                (try? JSONSerialization.jsonObject(with: Data(made.output.utf8)) as? [[String: Any]])?.first?["user_id"]
                    as? String, "\(made.output) \(made.errors)")
            let before = cluster.log(leader).components(separatedBy: "injected faults changed").count
            try cluster.setFault(leader, \.sessionClockOffsetMilliseconds, 11 * 60_000)
            #expect(
                await eventually(seconds: 10) {
                    cluster.log(leader).components(separatedBy: "injected faults changed").count > before
                })
            let stale = try crmctl(["users", "assign-roles", bob, "sales-manager"] + signedIn, file)
            #expect(stale.status != 0 && stale.errors.contains("step up"), "\(stale.errors)")
            let later = now() + 11 * 60_000
            let stepUp = try crmctl(
                ["mfa", "step-up"] + signedIn, file,
                input: TOTP.code(secret: secret, step: TOTP.step(atMillis: later)) + "\n")
            #expect(stepUp.status == 0, "\(stepUp.errors)")
            let assigned = try crmctl(["users", "assign-roles", bob, "sales-manager"] + signedIn, file)
            #expect(assigned.status == 0, "\(assigned.errors)")
            let own = try crmctl(["mfa", "reset", me["user_id"] as? String ?? ""] + signedIn, file)
            #expect(own.status != 0 && own.errors.contains("nobody resets their own"), "\(own.errors)")

            // Each step is in the audit trail: failures denied, the rest done.
            let trail = try crmctl(["audit", "tail", "-n", "60", "--json"], file).output
            for action in [
                "mfa.enrol", "mfa.confirm", "login.password", "login.success", "login.failure", "mfa.step_up",
            ] {
                #expect(trail.contains("\"\(action)\""), "no \(action) entry")
            }
            #expect(try crmctl(["audit", "verify"], file).status == 0)
            await cluster.closeConnections()
        }
    }
}
