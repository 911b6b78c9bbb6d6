import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Synchronization
import Testing

/// Login alerts on real processes with the geo fixture: a new device, a new network and country
/// with impossible travel, success after failures; each an `al/` record listed by ListAlerts,
/// streamed by WatchAlerts from a follower, audited and counted. A sign-in outside a role's
/// address ranges is refused.
extension RealProcessTests {
    @Suite struct LoginAlertProcessTests {
        @Test func signInsRaiseAlertsThatAreListedStreamedAuditedAndCounted() async throws {
            let geo = ProcessCluster.repository.appendingPathComponent("Tests/Fixtures/geo.csv").path
            let cluster = try ProcessCluster(clients: ["app", "branch"]) { $0.crm?.geoFile = geo }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let acting: Metadata = ["authorization": "Bearer \(admin)"]
            var principal = Crm_V1_PutPrincipalRequest()
            principal.principal.name = "app"
            principal.principal.ceiling = [ProcessCluster.recordsRole, "security-admin"]
            principal.principal.mayAssertAddress = true
            _ = try await cluster.connection(leader, .admin).admin.putPrincipal(
                principal, options: ProcessCluster.shortCall)
            let follower = try #require(cluster.ids.first { $0 != leader })
            let directory = try cluster.connection(leader, .client, as: "crmctl").directory
            // The harness's own sign-ins came before (the second of them from a device it did not
            // keep: a new device); what follows is compared from here on.
            var since = Crm_V1_ListAlertsRequest()
            since.after =
                try await directory.listAlerts(since, metadata: acting, options: ProcessCluster.shortCall).alerts.last?
                .cursor ?? ""

            // A notifier watching from a follower, as an application would.
            let streamed = Mutex<[String]>([])
            let watcher = Task { [since] in
                let directory = try cluster.connection(follower, .client, as: "crmctl").directory
                try await directory.watchAlerts(since, metadata: acting) { response in
                    for try await alert in response.messages { streamed.withLock { $0.append(alert.kind) } }
                }
            }

            let front = try cluster.frontConnection(leader)
            func login(
                _ address: String, device: String = "", password: String = ProcessCluster.harnessPassword
            )
                async throws -> Crm_V1_LoginResponse
            {
                var request = Crm_V1_LoginRequest()
                request.username = "records-harness"
                request.password = password
                request.clientAddress = address
                request.userAgent = "Example Browser/1.0"
                request.deviceToken = device
                return try await front.directory.login(request, options: ProcessCluster.shortCall)
            }
            // A device the user never signed in from: a new device.
            let first = try await login("198.51.100.7")
            #expect(first.deviceToken.hasPrefix("crm_d_"))
            // The same device on the same network: nothing.
            #expect(try await login("198.51.100.8", device: first.deviceToken).deviceToken == first.deviceToken)
            // London seconds after Shanghai: a new network and country, and impossible travel.
            _ = try await login("203.0.113.9", device: first.deviceToken)
            // Three wrong passwords, then the right one (back in Shanghai: impossible again).
            for _ in 0..<3 {
                await #expect(throws: RPCError.self) {
                    _ = try await login("198.51.100.7", device: first.deviceToken, password: "not the passphrase")
                }
            }
            _ = try await login("198.51.100.7", device: first.deviceToken)

            let expected = [
                "new_device", "new_network", "new_country", "impossible_travel", "success_after_failures",
                "impossible_travel",
            ]
            let listed = try await directory.listAlerts(since, metadata: acting, options: ProcessCluster.shortCall)
                .alerts
            #expect(listed.map(\.kind) == expected, "\(listed.map(\.kind))")
            #expect(listed.allSatisfy { !$0.userID.isEmpty && $0.application == "crm://client/app" })
            #expect(!listed.contains { $0.detail.contains("198.51") || $0.detail.contains("203.0") })
            // From a cursor: only those after it.
            var after = Crm_V1_ListAlertsRequest()
            after.after = listed[2].cursor
            #expect(
                try await directory.listAlerts(after, metadata: acting, options: ProcessCluster.shortCall).alerts.map(
                    \.kind) == Array(expected.dropFirst(3)))
            for _ in 0..<50 where streamed.withLock({ $0.count }) < expected.count {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(streamed.withLock { $0 } == expected)
            watcher.cancel()
            _ = await watcher.result

            // Each alert is an audit entry too, and the leader counted them.
            let file = try cluster.writeClusterFile()
            let trail = try ProcessCluster.tool("crmctl", ["audit", "tail", "-n", "60", "--json", "--cluster", file])
            #expect(trail.output.components(separatedBy: "\"alert.impossible_travel\"").count - 1 == 2)
            #expect(!trail.output.contains("198.51.100") && !trail.output.contains("Example Browser"))
            let metrics = await cluster.health(leader, "/metrics").body
            #expect(metrics.contains("crm_login_alerts_total{kind=\"impossible_travel\"} 2"), "\(metrics.prefix(200))")

            // Only security administrators and auditors read alerts.
            let records = try #require(cluster.bearerTokens.withLock { $0["app"] })
            await #expect(throws: RPCError.self) {
                _ = try await front.directory.listAlerts(
                    Crm_V1_ListAlertsRequest(), metadata: ["authorization": "Bearer \(records)"],
                    options: ProcessCluster.shortCall)
            }

            // A role limited to some address ranges refuses a sign-in from elsewhere, naming why.
            var role = Crm_V1_PutRoleRequest()
            role.yaml = "name: addresses-only\nobjects: {person: {read: own}}\nconditions: {ip_ranges: [10.0.0.0/8]}\n"
            _ = try await directory.putRole(role, metadata: acting, options: ProcessCluster.shortCall)
            principal.principal.name = "branch"
            principal.principal.ceiling = ["addresses-only"]
            _ = try await cluster.connection(leader, .admin).admin.putPrincipal(
                principal, options: ProcessCluster.shortCall)
            var user = Crm_V1_CreateUserRequest()
            user.username = "branch-office"
            user.password = "branch office passphrase one"
            user.roles = ["addresses-only"]
            _ = try await directory.createUser(user, metadata: acting, options: ProcessCluster.shortCall)
            let branchFront = try cluster.frontConnection(follower, client: "branch")
            var branch = Crm_V1_LoginRequest()
            branch.username = "branch-office"
            branch.password = user.password
            branch.clientAddress = "198.51.100.7"
            do {
                _ = try await branchFront.directory.login(branch, options: ProcessCluster.shortCall)
                Issue.record("a sign-in outside the role's address ranges was let in")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied && error.message.contains("address ranges"), "\(error)")
            }
            branch.clientAddress = "10.1.2.3"
            #expect(try await branchFront.directory.login(branch, options: ProcessCluster.shortCall).passwordChangeOnly)
            await branchFront.close()
            await front.close()
            await cluster.closeConnections()
        }
    }
}
