import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// Sign-in throttling is replicated: failures spread over every front count together, the
/// right password then gets the same 401 with a retry-after (gRPC metadata, HTTP header), and
/// an administrator unlocks.
extension RealProcessTests {
    @Suite struct ThrottleProcessTests {
        @Test func failuresSpreadOverFrontsBackOffTheAccountEverywhere() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let fronts = try cluster.ids.map { try cluster.frontConnection($0, client: "app") }
            var wrong = Crm_V1_LoginRequest()
            wrong.username = "records-harness"
            wrong.password = "not the passphrase at all"
            for index in 0..<5 {
                do {
                    _ = try await fronts[index % 3].directory.login(wrong, options: ProcessCluster.shortCall)
                    Issue.record("a wrong password signed in")
                } catch let error as RPCError {
                    #expect(error.code == .unauthenticated && error.message == "the username or password is wrong")
                }
            }
            // The right password through the one front not used last: the same answer, and when to retry.
            var right = wrong
            right.password = ProcessCluster.harnessPassword
            do {
                _ = try await fronts[2].directory.login(right, options: ProcessCluster.shortCall)
                Issue.record("the right password was let through during the back-off")
            } catch let error as RPCError {
                #expect(error.code == .unauthenticated && error.message == "the username or password is wrong")
                let after = error.metadata[stringValues: "retry-after-ms"].first(where: { _ in true }).flatMap {
                    UInt64($0)
                }
                #expect(after != nil && after! <= 1000, "retry-after-ms \(String(describing: after))")
            }
            let reply = try await cluster.frontHTTP(
                leader, "POST", "/v1/auth/login",
                json: #"{"username": "records-harness", "password": "\#(ProcessCluster.harnessPassword)"}"#)
            let retryAfter = reply.headers.first { $0.key.lowercased() == "retry-after" }?.value
            #expect(reply.status == 401 && retryAfter == "1", "\(reply.status) \(reply.headers) \(reply.text)")
            try await Task.sleep(for: .milliseconds(1100))
            let opened = try await fronts[1].directory.login(right, options: ProcessCluster.shortCall)
            #expect(opened.token.hasPrefix("crm_s_"))
            for front in fronts { await front.close() }

            // Every failure is an audit entry naming the user, outcome denied.
            let file = try cluster.writeClusterFile()
            let trail = try ProcessCluster.tool("crmctl", ["audit", "tail", "-n", "40", "--json", "--cluster", file])
            let failures = trail.output.components(separatedBy: "\"login.failure\"").count - 1
            #expect(failures == 5, "\(failures) login.failure entries")
            await cluster.closeConnections()
        }
    }
}
