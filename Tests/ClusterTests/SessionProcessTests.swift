import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Sessions belong to their owner on real processes (security review F4): another client can no
/// longer make a client's acknowledged write disappear, whichever entry each of them uses.
extension RealProcessTests {
    @Suite struct SessionProcessTests {
        @Test func anotherClientCannotMakeAnAcknowledgedWriteDisappear() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let followers = cluster.ids.filter { $0 != leader }
            let base64 = { (text: String) in Data(text.utf8).base64EncodedString() }

            // The owner opens a session through a follower's client API (forwarded to the leader on its behalf).
            let owner = try MemberConnection(
                host: "127.0.0.1", port: cluster.addresses(followers[0]).client.port, tls: cluster.tls("app"))
            let session = try await owner.kv.openSession(Crm_V1_OpenSessionRequest(), options: ProcessCluster.shortCall)
                .sessionID
            #expect(session > 0 && session < (1 << 53))

            // Another client, through a front, writes sequence 1 of that session first: refused.
            var reply = try await cluster.frontHTTP(
                followers[1], "POST", "/v1/kv/put",
                json:
                    #"{"key": "\#(base64("taken"))", "value": "\#(base64("x"))", "session": {"id": \#(session), "sequence": 1}}"#,
                client: "crmctl")
            #expect(reply.status == 403 && reply.text.contains("belongs to another client"), "\(reply.text)")
            let intruder = try MemberConnection(
                host: "127.0.0.1", port: cluster.addresses(leader).client.port, tls: cluster.clientTLS)
            var close = Crm_V1_CloseSessionRequest()
            close.sessionID = session
            await #expect(throws: RPCError.self) {
                _ = try await intruder.kv.closeSession(close, options: ProcessCluster.shortCall)
            }
            await intruder.close()

            // The owner's own sequence 1, through the leader's front: acknowledged and applied.
            reply = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/put",
                json:
                    #"{"key": "\#(base64("mine"))", "value": "\#(base64("kept"))", "session": {"id": \#(session), "sequence": 1}}"#
            )
            #expect(reply.status == 200, "\(reply.text)")
            #expect(try await cluster.get("mine", via: followers[1]) == "kept", "the acknowledged write is there")
            #expect(try await cluster.get("taken", via: followers[1]) == nil)
            _ = try await owner.kv.closeSession(close, options: ProcessCluster.shortCall)
            await owner.close()
            await cluster.closeConnections()
        }
    }
}
