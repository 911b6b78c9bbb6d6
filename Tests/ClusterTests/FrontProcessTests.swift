import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Synchronization
import Testing

/// The front on real processes: routing for the whole cluster over gRPC and HTTP/JSON.
extension RealProcessTests {
    @Suite struct FrontProcessTests {
        static func json(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        }

        static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

        @Test func anyFrontServesTheWholeClusterOverGRPCAndHTTP() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let followers = cluster.ids.filter { $0 != leader }

            // gRPC through a follower's front: the write reaches the leader (forwarded by the
            // follower's member, which answers once it has applied it), no client session needed.
            var put = Crm_V1_PutRequest()
            put.key = Data("contact/1".utf8)
            put.value = Data("Ada".utf8)
            let written = try await cluster.frontConnection(followers[0]).kv.put(put, options: ProcessCluster.shortCall)
            #expect(written.header.memberID == followers[0] && written.header.leaderID == leader)

            // HTTP/JSON through the other follower's front reads it back, linearizably and serializably.
            let front = followers[1]
            var reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/get", json: #"{"key": "\#(Self.base64("contact/1"))"}"#)
            #expect(reply.status == 200, "\(reply.text)")
            #expect(
                Self.json(reply.text)["value"] as? String == Self.base64("Ada")
                    && Self.json(reply.text)["found"] as? Bool == true)
            try #require(
                await eventually(seconds: 5) {
                    let serial = try? await cluster.frontHTTP(
                        front, "POST", "/v1/kv/get",
                        json: #"{"key": "\#(Self.base64("contact/1"))", "consistency": "serializable"}"#)
                    return serial.map {
                        Self.json($0.text)["found"] as? Bool == true
                            && (Self.json($0.text)["header"] as? [String: Any])?["member_id"] as? Int == Int(front)
                    } ?? false
                }, "a serializable read is served by the front's own member")

            reply = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/put",
                json: #"{"key": "\#(Self.base64("contact/2"))", "value": "\#(Self.base64("Grace"))"}"#)
            #expect(reply.status == 200, "\(reply.text)")
            reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/cas",
                json:
                    #"{"key": "\#(Self.base64("contact/3"))", "expect_absent": true, "value": "\#(Self.base64("Edsger"))"}"#
            )
            #expect(Self.json(reply.text)["swapped"] as? Bool == true, "\(reply.text)")
            reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/cas",
                json:
                    #"{"key": "\#(Self.base64("contact/3"))", "expect_absent": true, "value": "\#(Self.base64("again"))"}"#
            )
            #expect(Self.json(reply.text)["swapped"] as? Bool == false, "\(reply.text)")
            reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/range", json: #"{"from": "\#(Self.base64("contact/"))", "limit": 10}"#)
            let pairs = Self.json(reply.text)["pairs"] as? [[String: Any]] ?? []
            #expect(
                pairs.compactMap { $0["value"] as? String } == ["Ada", "Grace", "Edsger"].map(Self.base64),
                "\(reply.text)")
            reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/delete", json: #"{"key": "\#(Self.base64("contact/2"))"}"#)
            #expect(Self.json(reply.text)["existed"] as? Bool == true, "\(reply.text)")

            // A client session through the front, numbered by the client.
            reply = try await cluster.frontHTTP(front, "POST", "/v1/session/open")
            let session = try #require(Self.json(reply.text)["session_id"] as? Int, "\(reply.text)")
            for _ in 0..<2 {
                reply = try await cluster.frontHTTP(
                    front, "POST", "/v1/kv/put",
                    json:
                        #"{"key": "\#(Self.base64("once"))", "value": "\#(Self.base64("1"))", "session": {"id": \#(session), "sequence": 1}}"#
                )
                #expect(
                    reply.status == 200, "a retried write in a session is answered, not applied twice: \(reply.text)")
            }

            // Bad requests get a clear error and a matching status.
            reply = try await cluster.frontHTTP(
                front, "POST", "/v1/kv/put", json: #"{"key": "not base64!", "value": ""}"#)
            #expect(reply.status == 400 && Self.json(reply.text)["error"] != nil, "\(reply.text)")
            reply = try await cluster.frontHTTP(front, "POST", "/v1/kv/put", json: #"{"value": ""}"#)
            #expect(reply.status == 400 && reply.text.contains("key"), "\(reply.text)")
            reply = try await cluster.frontHTTP(front, "GET", "/v1/kv/put")
            #expect(reply.status == 405)
            reply = try await cluster.frontHTTP(front, "GET", "/v2/anything")
            #expect(reply.status == 404 && reply.text.contains("/v1/kv"))

            // The front's view: every member readable, the leader named.
            reply = try await cluster.frontHTTP(front, "GET", "/v1/cluster")
            let view = Self.json(reply.text)
            #expect(view["leader"] as? Int == Int(leader), "\(reply.text)")
            #expect(await cluster.frontSeesEveryMemberReadable(front), "\(reply.text)")
            #expect(await eventually(seconds: 10) { await cluster.converged() })
            await cluster.closeConnections()
        }

        /// Writes through a follower's front travel to the leader inside the log's own proposal
        /// messages (counted by `crm_raft_writes_forwarded_total`) and each applies once, also
        /// when the leader is killed while they are under way: a compare-and-swap from absent
        /// that applied twice would answer `swapped: false` the second time.
        @Test func aFollowersFrontForwardsWritesInTheLogAndEachAppliesOnceAcrossALeaderKill() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = cluster.ids.first { $0 != leader }!
            let forwarded: @Sendable () async -> Double = {
                let metrics = await cluster.health(front).body
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("crm_raft_writes_forwarded_total ") }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? -1
            }
            #expect(await forwarded() == 0)
            let (writers, perWriter, killAfter) = (8, 25, 60)
            let succeeded = Tally()
            var options = CallOptions.defaults
            options.timeout = .seconds(20)
            let callOptions = options
            let outcomes = try await withThrowingTaskGroup(of: [String].self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        var problems: [String] = []
                        for step in 0..<perWriter {
                            var request = Crm_V1_CompareAndSwapRequest()
                            request.key = Data("once/\(writer)/\(step)".utf8)
                            request.expectAbsent = true
                            request.newValue = Data("value \(writer)/\(step)".utf8)
                            do {
                                let reply = try await cluster.frontConnection(front).kv.compareAndSwap(
                                    request, options: callOptions)
                                if !reply.swapped { problems.append("once/\(writer)/\(step) did not swap") }
                                succeeded.add()
                            } catch {
                                problems.append("once/\(writer)/\(step): \(error)")
                            }
                        }
                        return problems
                    }
                }
                group.addTask {
                    let deadline = Date().addingTimeInterval(60)
                    while succeeded.value < killAfter && Date() < deadline {
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    #expect(await forwarded() >= Double(killAfter), "writes before the kill went through the log")
                    cluster.kill9(leader)
                    return []
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(outcomes.isEmpty, "\(outcomes)")
            for writer in 0..<writers {
                for step in 0..<perWriter {
                    var get = Crm_V1_GetRequest()
                    get.key = Data("once/\(writer)/\(step)".utf8)
                    let read = try await cluster.frontConnection(front).kv.get(get, options: ProcessCluster.shortCall)
                    #expect(String(decoding: read.value, as: UTF8.self) == "value \(writer)/\(step)")
                }
            }
            try cluster.start(leader)
            #expect(await eventually(seconds: 15) { await cluster.converged() })
            await cluster.closeConnections()
        }

        /// A client over its rate gets `429` with Retry-After over HTTP and RESOURCE_EXHAUSTED with
        /// `retry-after-ms` over gRPC; another client is not affected.
        @Test func aClientOverItsRateIsToldWhenToRetry() async throws {
            let cluster = try ProcessCluster {
                $0.front?.requestsPerSecond = 5
                $0.front?.burst = 5
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            var statuses: [Int] = []
            var limited: HTTPSRequest.Response?
            for _ in 0..<20 {
                let reply = try await cluster.frontHTTP(
                    leader, "POST", "/v1/kv/get", json: #"{"key": "\#(Self.base64("k"))"}"#)
                statuses.append(reply.status)
                if reply.status == 429 { limited = reply }
            }
            #expect(statuses.prefix(5).allSatisfy { $0 == 200 }, "the burst is served: \(statuses)")
            let refusal = try #require(limited, "20 requests at once exceed 5 a second: \(statuses)")
            #expect(Int(refusal.headers["retry-after"] ?? "") ?? 0 >= 1)
            let error = Self.json(refusal.text)["error"] as? [String: Any]
            #expect(
                error?["code"] as? String == "RESOURCE_EXHAUSTED" && (error?["retry_after_ms"] as? Int ?? 0) > 0,
                "\(refusal.text)")
            #expect(
                (error?["message"] as? String)?.contains("crm://client/app may make 5 requests a second") == true,
                "\(refusal.text)")
            let other = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/get", json: #"{"key": "\#(Self.base64("k"))"}"#, client: "crmctl")
            #expect(other.status == 200, "another client has its own bucket")

            var grpcRefusal: RPCError?
            var get = Crm_V1_GetRequest()
            get.key = Data("k".utf8)
            for _ in 0..<20 {
                do {
                    _ = try await cluster.frontConnection(leader).kv.get(get, options: ProcessCluster.shortCall)
                } catch let error as RPCError {
                    grpcRefusal = error
                    break
                }
            }
            let refused = try #require(grpcRefusal)
            #expect(refused.code == .resourceExhausted && refused.message.contains("rate limited"))
            #expect(refused.metadata[stringValues: "retry-after-ms"].contains { (UInt64($0) ?? 0) > 0 })
            await cluster.closeConnections()
        }
    }
}

/// A count shared by concurrent tasks.
private final class Tally: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
