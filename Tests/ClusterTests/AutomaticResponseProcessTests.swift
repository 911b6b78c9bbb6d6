import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// Automatic responses and advisory alarms on real processes: failed sign-ins through one
/// application past `crm.auth_attack_failures_per_minute` raise AUTH_ATTACK on the leader, an
/// `auth_attack` and a `client_blocked` alert, and block that application at every member while
/// another application's users sign in as before (the alerts read over gRPC and over a front's
/// HTTP API alike); `crmctl clients unblock` lifts it. A member
/// whose wall clock is 30 s off raises CLOCK_SKEW (the others do not) and still serves.
extension RealProcessTests {
    @Suite struct AutomaticResponseProcessTests {
        @Test func aSignInAttackBlocksItsApplicationAndAClockOffRaisesClockSkew() async throws {
            let cluster = try ProcessCluster(clients: ["app", "branch"]) {
                $0.crm?.authAttackFailuresPerMinute = 10
                $0.crm?.isolateClients = true
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser(principals: ["app", "branch"])
            let acting: Metadata = ["authorization": "Bearer \(admin)"]
            let follower = try #require(cluster.ids.first { $0 != leader })
            // "branch" asserts its end users' addresses: the attack comes from many.
            var principal = Crm_V1_PutPrincipalRequest()
            principal.principal.name = "branch"
            principal.principal.ceiling = [ProcessCluster.recordsRole, "security-admin"]
            principal.principal.mayAssertAddress = true
            _ = try await cluster.connection(leader, .admin).admin.putPrincipal(
                principal, options: ProcessCluster.shortCall)
            func login(
                _ username: String, through client: String, password: String, from address: String = ""
            ) async throws {
                var request = Crm_V1_LoginRequest()
                request.username = username
                request.password = password
                request.clientAddress = address
                _ = try await cluster.connection(follower, .client, as: client).directory.login(
                    request, options: ProcessCluster.shortCall)
            }

            // Credential stuffing through "branch": eleven accounts, eleven wrong passwords, each
            // from another address (no source fails often enough to be held on its own).
            for index in 0..<11 {
                await #expect(throws: RPCError.self) {
                    try await login(
                        "stuffed-\(index)", through: "branch", password: "guessed password \(index)",
                        from: "198.51.100.\(index + 1)")
                }
            }
            let raised = await eventually(seconds: 10) {
                let state = try? await cluster.connection(leader).kv.memberState(
                    Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
                return state?.alarms.contains { $0.kind == .authAttack } ?? false
            }
            #expect(raised, "the leader raised no AUTH_ATTACK")
            // "branch" is blocked at every member, even with the right password...
            let blocked = await eventually(seconds: 10) {
                do {
                    try await login("records-harness", through: "branch", password: ProcessCluster.harnessPassword)
                    return false
                } catch let error as RPCError {
                    return error.code == .permissionDenied && error.message.contains("blocked")
                } catch { return false }
            }
            #expect(blocked, "the application behind the attack was not blocked")
            // ...while users of "app" sign in as before, and the member keeps serving.
            try await login("records-harness", through: "app", password: ProcessCluster.harnessPassword)
            let directory = try cluster.connection(leader, .client, as: "crmctl").directory
            let kinds = try await directory.listAlerts(
                Crm_V1_ListAlertsRequest(), metadata: acting, options: ProcessCluster.shortCall
            ).alerts.map(\.kind)
            #expect(kinds.contains("auth_attack") && kinds.contains("client_blocked"), "\(kinds)")
            // The same alerts over a front's HTTP API, for a notifier without gRPC; from a cursor on.
            let listed = try await cluster.frontHTTP(
                follower, "GET", "/v1/auth/alerts?limit=1000", client: "crmctl",
                headers: [("Authorization", "Bearer \(admin)")])
            let alerts =
                (try? JSONSerialization.jsonObject(with: listed.body) as? [String: Any])?["alerts"] as? [[String: Any]]
                ?? []
            #expect(listed.status == 200 && alerts.compactMap { $0["kind"] as? String } == kinds, "\(listed.text)")
            let first = try #require(alerts.first?["cursor"] as? String)
            let after = try await cluster.frontHTTP(
                follower, "GET", "/v1/auth/alerts?after=\(first)", client: "crmctl",
                headers: [("Authorization", "Bearer \(admin)")])
            #expect(after.text.components(separatedBy: "\"cursor\"").count - 1 == alerts.count - 1, "\(after.text)")
            let unsigned = try await cluster.frontHTTP(follower, "GET", "/v1/auth/alerts", client: "branch")
            #expect(unsigned.status == 401 || unsigned.status == 403, "\(unsigned.status) \(unsigned.text)")
            let file = try cluster.writeClusterFile()
            let trail = try ProcessCluster.tool("crmctl", ["audit", "tail", "-n", "60", "--json", "--cluster", file])
            #expect(trail.output.contains("\"principal.block\"") && trail.output.contains("\"alert.auth_attack\""))
            // The operator lifts the block.
            let unblock = try ProcessCluster.tool("crmctl", ["clients", "unblock", "branch", "--cluster", file])
            #expect(unblock.status == 0, "\(unblock.errors)")
            try await login(
                "records-harness", through: "branch", password: ProcessCluster.harnessPassword, from: "192.0.2.1")

            // A follower's clock 30 s ahead: it raises CLOCK_SKEW, its peers do not.
            try cluster.setFault(follower, \.clockOffsetMilliseconds, 30_000)
            #expect(await eventually(seconds: 15) { await cluster.alarms(follower).contains(.clockSkew) })
            for member in cluster.ids where member != follower {
                #expect(!(await cluster.alarms(member).contains(.clockSkew)), "member \(member) blamed itself")
            }
            // Advisory: it still answers reads.
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "company"
            create.fields = ["name": .with { $0.text = "Difference Engines" }]
            let records = try cluster.connection(follower, .client).records
            #expect(try await records.create(create, options: ProcessCluster.shortCall).record.id.isEmpty == false)
            try cluster.clearFaults(follower)
            #expect(await eventually(seconds: 15) { !(await cluster.alarms(follower).contains(.clockSkew)) })
            await cluster.closeConnections()
        }
    }
}
