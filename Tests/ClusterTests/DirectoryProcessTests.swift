import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// Sign-in and sessions on real processes: the bootstrap through crmctl, a token file only its
/// owner may read, a password change through one member ending the old session on another at
/// its next call, tokens bound to their application, and one answer for every failure.
extension RealProcessTests {
    @Suite struct DirectoryProcessTests {
        private let password = "correct horse battery staple"

        private func crmctl(
            _ arguments: [String], _ file: String, input: String? = nil
        ) throws -> (
            status: Int32, output: String, errors: String
        ) {
            try ProcessCluster.tool("crmctl", arguments + ["--cluster", file], input: input.map { Data($0.utf8) })
        }

        private func unauthenticated(_ call: () async throws -> some Any) async -> String? {
            do {
                _ = try await call()
                return nil
            } catch let error as RPCError where error.code == .unauthenticated {
                return error.message
            } catch {
                return "unexpected \(error)"
            }
        }

        @Test func signInSessionsAndAPasswordChangeSeenByEveryMember() async throws {
            let cluster = try ProcessCluster(clients: ["app", "other"])
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let others = cluster.ids.filter { $0 != leader }
            let file = try cluster.writeClusterFile()

            let weak = try crmctl(["users", "bootstrap", "root-admin"], file, input: "password123\n")
            #expect(weak.status != 0 && weak.errors.contains("at least 12"), "\(weak.errors)")
            let bootstrap = try crmctl(["users", "bootstrap", "root-admin"], file, input: password + "\n")
            #expect(bootstrap.status == 0, "\(bootstrap.errors)")
            #expect(try crmctl(["clients", "put", "app", "--ceiling", "sales-rep"], file).status == 0)
            let again = try crmctl(["users", "bootstrap", "second-admin"], file, input: password + "\n")
            #expect(again.status != 0 && again.errors.contains("bootstrapped already"), "\(again.errors)")

            // crmctl login keeps the token in a file only its owner may read.
            let tokenFile = cluster.directory + "/token"
            let login = try crmctl(["login", "ROOT-admin", "--token-file", tokenFile], file, input: password + "\n")
            #expect(login.status == 0 && login.output.contains("must be changed"), "\(login.output) \(login.errors)")
            let mode = try FileManager.default.attributesOfItem(atPath: tokenFile)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600)
            let whoami = try crmctl(["whoami", "--token-file", tokenFile, "--json"], file)
            #expect(
                whoami.output.contains("\"password_change_only\":true")
                    || whoami.output.contains("\"password_change_only\" : true"), "\(whoami.output) \(whoami.errors)")
            #expect(whoami.output.contains("security-admin"))
            let first = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)

            // A password change through one member; the old token fails through another at once.
            let one = try cluster.connection(others[0], .client).directory
            let two = try cluster.connection(others[1], .client).directory
            let three = try cluster.connection(leader, .client).directory
            var change = Crm_V1_ChangePasswordRequest()
            change.currentPassword = password
            change.newPassword = "a quite new passphrase"
            let changed = try await one.changePassword(
                change, metadata: ["authorization": "Bearer \(first)"], options: ProcessCluster.shortCall)
            let noSession = await unauthenticated {
                try await two.whoAmI(
                    .init(), metadata: ["authorization": "Bearer \(first)"], options: ProcessCluster.shortCall)
            }
            #expect(noSession == "no valid session; sign in again")
            let me = try await three.whoAmI(
                .init(), metadata: ["authorization": "Bearer \(changed.token)"], options: ProcessCluster.shortCall)
            #expect(me.username == "root-admin" && !me.passwordChangeOnly && me.application == "crm://client/crmctl")

            // The token belongs to crmctl's certificate: another application's is refused.
            let app = try cluster.frontConnection(others[1], client: "app").directory
            #expect(
                await unauthenticated {
                    try await app.whoAmI(
                        .init(), metadata: ["authorization": "Bearer \(changed.token)"],
                        options: ProcessCluster.shortCall)
                } == noSession)
            // Malformed headers: the same answer.
            for header in [
                "Bearer  \(changed.token)", "bearer \(changed.token)", "Bearer Bearer \(changed.token)",
                changed.token, "Bearer \(changed.token)x",
            ] {
                #expect(
                    await unauthenticated {
                        try await two.whoAmI(
                            .init(), metadata: ["authorization": .string(header)], options: ProcessCluster.shortCall)
                    } == noSession, "\(header.prefix(12))")
            }
            var twice = Metadata()
            twice.addString("Bearer \(changed.token)", forKey: "authorization")
            twice.addString("Bearer \(changed.token)", forKey: "authorization")
            #expect(
                await unauthenticated {
                    try await two.whoAmI(.init(), metadata: twice, options: ProcessCluster.shortCall)
                } == noSession)

            // Every sign-in failure is one answer.
            var wrong = Crm_V1_LoginRequest()
            wrong.username = "root-admin"
            wrong.password = password
            let wrongPassword = await unauthenticated { try await two.login(wrong, options: ProcessCluster.shortCall) }
            wrong.username = "nobody-here"
            let unknownUser = await unauthenticated { try await two.login(wrong, options: ProcessCluster.shortCall) }
            #expect(wrongPassword == "the username or password is wrong" && unknownUser == wrongPassword)

            // Sessions listed; logging out ends this one.
            var login2 = Crm_V1_LoginRequest()
            login2.username = "root-admin"
            login2.password = "a quite new passphrase"
            let second = try await two.login(login2, options: ProcessCluster.shortCall)
            let listed = try await one.listSessions(
                .init(), metadata: ["authorization": "Bearer \(second.token)"], options: ProcessCluster.shortCall)
            #expect(listed.sessions.count == 2 && listed.sessions.filter(\.current).count == 1, "\(listed.sessions)")
            _ = try await three.logout(
                .init(), metadata: ["authorization": "Bearer \(second.token)"], options: ProcessCluster.shortCall)
            #expect(
                await unauthenticated {
                    try await one.whoAmI(
                        .init(), metadata: ["authorization": "Bearer \(second.token)"],
                        options: ProcessCluster.shortCall)
                } == noSession)
            // The same over HTTP/JSON on a front, as another application: it needs a principal.
            let unknownApp = try await cluster.frontHTTP(
                others[0], "POST", "/v1/auth/login",
                json: #"{"username": "root-admin", "password": "a quite new passphrase"}"#, client: "other")
            #expect(unknownApp.status == 403 && unknownApp.text.contains("no principal record"), "\(unknownApp.text)")
            let http = try await cluster.frontHTTP(
                others[0], "POST", "/v1/auth/login",
                json: #"{"username": "Root-Admin", "password": "a quite new passphrase"}"#)
            #expect(http.status == 200, "\(http.text)")
            let object = try JSONSerialization.jsonObject(with: http.body) as? [String: Any]
            let token = try #require(object?["token"] as? String)
            let meHTTP = try await cluster.frontHTTP(
                others[1], "GET", "/v1/auth/me", headers: [("Authorization", "Bearer \(token)")])
            #expect(
                meHTTP.status == 200 && meHTTP.text.contains("root-admin") && meHTTP.text.contains("crm://client/app"))
            for headers in [
                [], [("Authorization", "Bearer x")],
                [("Authorization", "Bearer \(token)"), ("Authorization", "Bearer \(token)")],
            ] {
                let refused = try await cluster.frontHTTP(others[1], "GET", "/v1/auth/me", headers: headers)
                #expect(refused.status == 401 && refused.text.contains("no valid session"), "\(refused.text)")
            }
            let badLogin = try await cluster.frontHTTP(
                leader, "POST", "/v1/auth/login", json: #"{"username": "root-admin", "password": "nope", "role": "x"}"#)
            #expect(badLogin.status == 400, "unknown members refused: \(badLogin.text)")
            let wrongHTTP = try await cluster.frontHTTP(
                leader, "POST", "/v1/auth/login", json: #"{"username": "root-admin", "password": "nope"}"#)
            #expect(wrongHTTP.status == 401 && wrongHTTP.text.contains("the username or password is wrong"))
            let out = try await cluster.frontHTTP(
                others[0], "POST", "/v1/auth/logout", json: "{}", headers: [("Authorization", "Bearer \(token)")])
            #expect(out.status == 200, "\(out.text)")
            let after = try await cluster.frontHTTP(
                others[1], "GET", "/v1/auth/me", headers: [("Authorization", "Bearer \(token)")])
            #expect(after.status == 401)

            // A blocked application is refused before anything else; its last use is recorded.
            let listedClients = try crmctl(["clients", "list", "--json"], file)
            #expect(
                listedClients.output.contains("\"name\":\"app\"") || listedClients.output.contains("\"name\" : \"app\"")
            )
            #expect(
                !listedClients.output.contains("\"last_used_millis\":0")
                    && !listedClients.output.contains("\"last_used_millis\" : 0"), "\(listedClients.output)")
            #expect(try crmctl(["clients", "block", "app"], file).status == 0)
            let blocked = try await cluster.frontHTTP(
                others[0], "POST", "/v1/auth/login",
                json: #"{"username": "root-admin", "password": "a quite new passphrase"}"#)
            #expect(blocked.status == 403 && blocked.text.contains("blocked"), "\(blocked.text)")

            // Nothing about the password in any member's log.
            for id in cluster.ids {
                #expect(!cluster.log(id).contains("horse battery") && !cluster.log(id).contains("passphrase"))
            }
        }

        @Test func administratorsManageUsersAndRolesWithinTheSeparationOfDuties() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let file = try cluster.writeClusterFile()
            let adminToken = cluster.directory + "/admin-token"
            let repToken = cluster.directory + "/rep-token"
            func run(
                _ arguments: [String], token: String, input: String? = nil
            ) throws -> (
                status: Int32, output: String, errors: String
            ) {
                try crmctl(arguments + ["--token-file", token], file, input: input)
            }
            #expect(try crmctl(["users", "bootstrap", "root-admin"], file, input: password + "\n").status == 0)
            #expect(try run(["login", "root-admin"], token: adminToken, input: password + "\n").status == 0)
            let early = try run(["users", "list"], token: adminToken)
            #expect(early.status != 0 && early.errors.contains("change the password first"), "\(early.errors)")
            let changed = try run(["password"], token: adminToken, input: password + "\nthe admin's own passphrase\n")
            #expect(changed.status == 0, "\(changed.errors)")
            let roles = try run(["roles", "list", "--json"], token: adminToken)
            for name in [
                "analyst", "auditor", "integration-readonly", "privacy-officer", "sales-manager", "sales-rep",
                "security-admin",
            ] {
                #expect(roles.output.contains(name), "\(roles.output) \(roles.errors)")
            }

            // A user who would hold an administrator's and a privacy officer's rights: refused.
            let breach = try run(
                ["users", "create", "mixed", "--role", "security-admin", "--role", "privacy-officer"],
                token: adminToken,
                input: "an initial passphrase\n")
            #expect(breach.status != 0 && breach.errors.contains("separation of duties"), "\(breach.errors)")
            let created = try run(
                ["users", "create", "rep1", "--role", "sales-rep", "--json"], token: adminToken,
                input: "an initial passphrase\n")
            #expect(created.status == 0, "\(created.errors)")
            let rep = try #require(
                (try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [[String: Any]])?.first?[
                    "user_id"]
                    as? String)
            let explained = try run(
                ["roles", "explain", rep, "person", "read", "--field", "emails", "--json"], token: adminToken)
            #expect(
                explained.output.contains("\"scope\":\"team\"") || explained.output.contains("\"scope\" : \"team\""),
                "\(explained.output)")
            #expect(explained.output.contains("sales-rep"), "the deciding role is named: \(explained.output)")

            // The new user must change the initial password, then has no administration rights.
            #expect(try run(["login", "rep1"], token: repToken, input: "an initial passphrase\n").status == 0)
            #expect(
                try run(["password"], token: repToken, input: "an initial passphrase\nthe rep's own passphrase\n")
                    .status == 0)
            let denied = try run(["users", "list"], token: repToken)
            #expect(denied.status != 0 && denied.errors.contains("user.admin"), "\(denied.errors)")

            // A role change ends the user's sessions; nobody changes their own roles.
            #expect(try run(["users", "assign-roles", rep, "analyst"], token: adminToken).status == 0)
            #expect(try run(["whoami"], token: repToken).status != 0, "the rep's session ended with the role change")
            let me = try run(["whoami", "--json"], token: adminToken)
            let adminID = try #require(
                (try JSONSerialization.jsonObject(with: Data(me.output.utf8)) as? [String: Any])?["user_id"] as? String)
            let own = try run(["users", "assign-roles", adminID, "security-admin", "analyst"], token: adminToken)
            #expect(own.status != 0 && own.errors.contains("own roles"), "\(own.errors)")

            // Teams: made and named by user administrators; joining one ends the member's
            // sessions; nobody changes their own; a retired team takes nobody new.
            #expect(try run(["teams", "create", "east"], token: adminToken).status == 0)
            let twice = try run(["teams", "create", "east"], token: adminToken)
            #expect(twice.status != 0 && twice.errors.contains("already a team called east"), "\(twice.errors)")
            #expect(try run(["login", "rep1"], token: repToken, input: "the rep's own passphrase\n").status == 0)
            let joined = try run(["users", "set-teams", rep, "east", "--json"], token: adminToken)
            let teams = try run(["teams", "list", "--json"], token: adminToken)
            let east = try #require(
                (try JSONSerialization.jsonObject(with: Data(teams.output.utf8)) as? [[String: Any]])?.first?["team_id"]
                    as? String, "\(teams.output) \(teams.errors)")
            #expect(joined.status == 0 && joined.output.contains(east), "\(joined.output) \(joined.errors)")
            #expect(try run(["whoami"], token: repToken).status != 0, "the rep's session ended with the team change")
            let ownTeams = try run(["users", "set-teams", adminID, "east"], token: adminToken)
            #expect(ownTeams.status != 0 && ownTeams.errors.contains("own teams"), "\(ownTeams.errors)")
            #expect(try run(["teams", "retire", "east"], token: adminToken).status == 0)
            let intoRetired = try run(
                ["users", "create", "rep2", "--role", "sales-rep", "--team", "east"], token: adminToken,
                input: "an initial passphrase\n")
            #expect(
                intoRetired.status != 0 && intoRetired.errors.contains("team east is retired"), "\(intoRetired.errors)")
            #expect(try run(["teams", "rename", "east", "east-old"], token: adminToken).status == 0)
            #expect(try run(["teams", "list"], token: adminToken).output.contains("east-old"))

            // A role edit that would put the rep (an analyst) in breach is refused naming the rep.
            let edit = cluster.directory + "/analyst.yaml"
            try
                "name: analyst\nobjects: {person: {read: all}}\nfields: {person: {emails: read}}\npermissions: [user.admin]\n"
                .write(toFile: edit, atomically: true, encoding: .utf8)
            let refusedEdit = try run(["roles", "put", edit], token: adminToken)
            #expect(refusedEdit.status != 0 && refusedEdit.errors.contains(rep), "\(refusedEdit.errors)")

            // A user imported with a passlib hash (as Odoo stores them) signs in with their own
            // password, again after its re-hash, and a malformed or hostile hash is refused.
            let odooHash =
                "$pbkdf2-sha512$25000$3JvT2junVGrNWYtxzlnrHQ$YGblkj8tvFzRpSF/DqOOsLLJMSn8rJUvfXSmtn4sW/DYMcCZo/GM5J5fyzd6aaJKaQzKcc0ihNyCdcFt7rFaoQ"
            let imported = try run(
                ["users", "create", "imported", "--role", "analyst", "--import-hash"], token: adminToken,
                input: odooHash + "\n")
            #expect(imported.status == 0, "\(imported.errors)")
            let importedToken = cluster.directory + "/imported-token"
            for attempt in 1...2 {
                let signIn = try run(["login", "imported"], token: importedToken, input: password + "\n")
                #expect(
                    signIn.status == 0 && !signIn.output.contains("must be changed"),
                    "attempt \(attempt): \(signIn.errors)")
            }
            #expect(try run(["login", "imported"], token: importedToken, input: "not the password\n").status != 0)
            for bad in ["$pbkdf2-sha512$1000000000$c2FsdHNhbHQ$dGFn", "$md5$abc$def", "plain"] {
                let refused = try run(
                    ["users", "create", "bad-import", "--import-hash"], token: adminToken, input: bad + "\n")
                #expect(refused.status != 0 && refused.errors.contains("password hash"), "\(bad): \(refused.errors)")
            }

            // Disabled: the right password no longer signs in.
            #expect(try run(["users", "disable", rep], token: adminToken).status == 0)
            let disabled = try run(["login", "rep1"], token: repToken, input: "the rep's own passphrase\n")
            #expect(disabled.status != 0 && disabled.errors.contains("the username or password is wrong"))
        }

        /// Idle and absolute timeouts through the sessions' test clock (debug builds only), and a
        /// session bound to the end user's address an application may assert.
        @Test func sessionsGoIdleExpireAndStayWithTheirAddress() async throws {
            let cluster = try ProcessCluster(clients: ["app", "other"]) {
                $0.health = NodeConfig.Health(checkIntervalMilliseconds: 50)
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let file = try cluster.writeClusterFile()
            #expect(try crmctl(["users", "bootstrap", "root-admin"], file, input: password + "\n").status == 0)
            let operatorTool = try cluster.connection(leader, .client)
            func login(_ via: MemberConnection, _ pass: String, address: String = "") async throws -> String {
                var request = Crm_V1_LoginRequest()
                request.username = "root-admin"
                request.password = pass
                request.clientAddress = address
                request.bindToAddress = !address.isEmpty
                return try await via.directory.login(request, options: ProcessCluster.shortCall).token
            }
            func valid(_ token: String, via: MemberConnection? = nil, address: String? = nil) async -> Bool {
                var metadata: Metadata = ["authorization": .string("Bearer \(token)")]
                if let address { metadata.addString(address, forKey: "crm-client-address") }
                let me = try? await (via ?? operatorTool).directory.whoAmI(
                    .init(), metadata: metadata, options: ProcessCluster.shortCall)
                return me != nil
            }
            let newPassword = "a quite new passphrase"
            var change = Crm_V1_ChangePasswordRequest()
            change.currentPassword = password
            change.newPassword = newPassword
            let first = try await login(operatorTool, password)
            _ = try await operatorTool.directory.changePassword(
                change, metadata: ["authorization": .string("Bearer \(first)")], options: ProcessCluster.shortCall)

            /// Moves the leader's session clock and waits until it has read the change.
            func shift(minutes: Int64) async throws {
                let before = cluster.log(leader).components(separatedBy: "injected faults changed").count
                try cluster.setFault(leader, \.sessionClockOffsetMilliseconds, minutes * 60_000)
                let seen = await eventually(seconds: 10) {
                    cluster.log(leader).components(separatedBy: "injected faults changed").count > before
                }
                #expect(seen, "the leader did not read the fault file")
            }

            // Idle: 31 minutes without a call end the session.
            let idle = try await login(operatorTool, newPassword)
            try await shift(minutes: 29)
            #expect(await valid(idle), "29 minutes idle: still valid (and touched now)")
            try await shift(minutes: 29 + 31)
            #expect(!(await valid(idle)), "31 minutes idle after the last call: ended")

            // Absolute: used every 25 minutes, it still ends 12 hours after it was opened.
            let busy = try await login(operatorTool, newPassword) // opened at +60 minutes
            var minutes: Int64 = 60
            while minutes + 25 < 60 + 12 * 60 {
                minutes += 25
                try await shift(minutes: minutes)
                #expect(await valid(busy), "\(minutes - 60) minutes after it opened")
            }
            try await shift(minutes: 60 + 12 * 60)
            #expect(!(await valid(busy)), "12 hours after it opened")
            try cluster.clearFaults(leader)

            // Bound to the address an application may assert; another's assertion is ignored.
            #expect(try crmctl(["clients", "put", "app", "--may-assert-address"], file).status == 0)
            #expect(try crmctl(["clients", "put", "other"], file).status == 0)
            let app = try cluster.frontConnection(leader, client: "app")
            let bound = try await login(app, newPassword, address: "192.0.2.10")
            #expect(await valid(bound, via: app, address: "192.0.2.10"))
            #expect(!(await valid(bound, via: app, address: "198.51.100.1")))
            #expect(!(await valid(bound, via: app)))
            let other = try cluster.frontConnection(leader, client: "other")
            let unbound = try await login(other, newPassword, address: "192.0.2.10")
            #expect(
                await valid(unbound, via: other, address: "198.51.100.1"), "an unasserting application's is unbound")
        }
    }
}
