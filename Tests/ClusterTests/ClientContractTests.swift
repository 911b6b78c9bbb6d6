import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// What a client written from the README and the .proto files alone can count on: every HTTP
/// error is the JSON error shape (never Swift's decoding text, never an empty body), fields that
/// contradict each other are refused, closing an unknown session is NOT_FOUND, and a front
/// answers within its deadline even when the cluster has lost its quorum.
extension RealProcessTests {
    @Suite struct ClientContractTests {
        static func error(_ reply: HTTPSRequest.Response) -> [String: Any] {
            let object = (try? JSONSerialization.jsonObject(with: reply.body)) as? [String: Any]
            return object?["error"] as? [String: Any] ?? [:]
        }

        /// Swift's own words must never reach a client.
        static func leaksInternals(_ text: String) -> Bool {
            ["DecodingError", "CodingKeys", "Swift.", "codingPath", "debugDescription"].contains { text.contains($0) }
        }

        @Test func httpErrorsAreTheJSONShapeAndNameTheProblem() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = try #require(cluster.ids.first { $0 != leader })
            let key = Data("contract".utf8).base64EncodedString()

            let cases: [(json: String, status: Int, mentions: String)] = [
                (#"{"key": 5, "value": "eA=="}"#, 400, "\"key\""),
                (#"{"key": "not base64!", "value": "eA=="}"#, 400, "\"key\""),
                (#"["key"]"#, 400, "object"),
                ("this is not json", 400, "not valid JSON"),
                (#"{"key": "\#(key)", "value": "eA==", "session": {"id": "seven", "sequence": 1}}"#, 400, "session.id"),
            ]
            for item in cases {
                let reply = try await cluster.frontHTTP(front, "POST", "/v1/kv/put", json: item.json)
                let error = Self.error(reply)
                #expect(
                    reply.status == item.status && error["code"] as? String == "INVALID_ARGUMENT",
                    "\(item.json): \(reply.text)")
                #expect((error["message"] as? String ?? "").contains(item.mentions), "\(item.json): \(reply.text)")
                #expect(!Self.leaksInternals(reply.text), "\(item.json): \(reply.text)")
            }

            // Headers over the parser's limit: a JSON 431, not an empty 400.
            let huge = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/get", json: #"{"key": "\#(key)"}"#,
                headers: [("X-Padding", String(repeating: "a", count: 100_000))])
            #expect(
                huge.status == 431 && Self.error(huge)["code"] as? String == "INVALID_ARGUMENT",
                "\(huge.status) \(huge.text)")
            #expect(huge.headers["content-type"] == "application/json")

            // Contradictory compare-and-swap fields are refused, over HTTP and gRPC.
            for json in [
                #"{"key": "\#(key)", "expected": "eA==", "expect_absent": true, "value": "eQ=="}"#,
                #"{"key": "\#(key)", "expect_absent": true, "value": "eQ==", "delete": true}"#,
                #"{"key": "\#(key)", "value": "eQ=="}"#,
            ] {
                let reply = try await cluster.frontHTTP(front, "POST", "/v1/kv/cas", json: json)
                #expect(
                    reply.status == 400 && Self.error(reply)["code"] as? String == "INVALID_ARGUMENT",
                    "\(json): \(reply.text)")
            }
            var cas = Crm_V1_CompareAndSwapRequest()
            cas.key = Data("contract".utf8)
            cas.expectAbsent = true
            cas.expectedValue = Data("x".utf8)
            cas.newValue = Data("y".utf8)
            do {
                _ = try await cluster.frontConnection(front).kv.compareAndSwap(cas, options: ProcessCluster.shortCall)
                Issue.record("a compare-and-swap with expect_absent and expected_value was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument && error.message.contains("expect_absent"), "\(error)")
            }
            // Nothing was written by any of them.
            let get = try await cluster.frontHTTP(front, "POST", "/v1/kv/get", json: #"{"key": "\#(key)"}"#)
            let found = (try JSONSerialization.jsonObject(with: get.body) as? [String: Any])?["found"] as? Bool
            #expect(get.status == 200 && found == false, "\(get.text)")

            // Closing a session that does not exist is NOT_FOUND (404), as the README says.
            let close = try await cluster.frontHTTP(front, "POST", "/v1/session/close", json: #"{"session_id": 12345}"#)
            #expect(close.status == 404 && Self.error(close)["code"] as? String == "NOT_FOUND", "\(close.text)")
            await cluster.closeConnections()
        }

        /// Without a quorum nothing can commit: a write without a session through the surviving
        /// member's front is answered within the front's 5 s deadline (the front session it needs
        /// shares that deadline), with the JSON error shape.
        @Test func withoutAQuorumAFrontAnswersWithinItsDeadline() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let survivor = try #require(cluster.ids.first { $0 != leader })
            for id in cluster.ids where id != survivor { cluster.kill9(id) }
            let key = Data("no-quorum".utf8).base64EncodedString()
            let started = ContinuousClock.now
            let reply = try await cluster.frontHTTP(
                survivor, "POST", "/v1/kv/put", json: #"{"key": "\#(key)", "value": "eA=="}"#)
            let elapsed = ContinuousClock.now - started
            print("no quorum: put answered \(reply.status) after \(elapsed): \(reply.text)")
            #expect(elapsed < .milliseconds(6500), "the front's deadline is 5 s; answered after \(elapsed)")
            // Every attempt was refused (the survivor knows no leader; the dead ones were never
            // reached), so the write certainly did not apply, and the answer says so.
            let error = Self.error(reply)
            #expect(
                reply.status == 503 && error["code"] as? String == "UNAVAILABLE" && error["refused"] as? Bool == true,
                "\(reply.text)")
            #expect(
                elapsed > .seconds(3), "the front retried within its deadline rather than giving up at once: \(elapsed)"
            )
            let message = error["message"] as? String ?? ""
            #expect(
                !message.contains("transient failure") && !message.contains("wait for ready"),
                "the gRPC library's words: \(message)")
            await cluster.closeConnections()
        }
    }
}
