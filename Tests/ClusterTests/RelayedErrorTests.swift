import CRMTestSupport
import ClusterHarness
import Foundation
import Testing

/// What a client in another language sees (Python's grpcio, stubs generated from proto/):
/// every error a member passes on reaches it with its code and message, and the calls that
/// share its HTTP/2 connection are not harmed; a flood of reads on one connection is served or
/// refused without costing the cluster its leader.
extension RealProcessTests {
    @Suite struct RelayedErrorTests {
        /// The Python with grpcio: `make test` makes .build/pyenv; CRM_PYTHON overrides.
        static var python: String {
            if let chosen = ProcessInfo.processInfo.environment["CRM_PYTHON"] { return chosen }
            let venv = ProcessCluster.repository.appendingPathComponent(".build/pyenv/bin/python3").path
            return FileManager.default.isExecutableFile(atPath: venv) ? venv : "/usr/bin/env"
        }

        static func client(_ arguments: [String]) throws -> [[String: Any]] {
            let script = ProcessCluster.repository.appendingPathComponent("Tests/python/crm_grpc_client.py").path
            let python = Self.python
            let (status, output, errors) = try ProcessCluster.tool(
                absolute: python, (python == "/usr/bin/env" ? ["python3"] : []) + [script] + arguments)
            guard status == 0 else {
                Issue.record("crm_grpc_client.py \(arguments.first ?? "") exited \(status): \(errors.suffix(2000))")
                return []
            }
            return output.split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }
        }

        @Test func errorsRelayedByAMemberReachAPythonClientIntact() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let follower = try #require(cluster.ids.first { $0 != leader })
            let files = cluster.tls("app")
            let tls = [files.ca, files.certificate, files.privateKey].joined(separator: ",")
            let targets = [
                ("follower's front", cluster.addresses(follower).front.port),
                ("leader's front", cluster.addresses(leader).front.port),
                ("follower's client API", cluster.addresses(follower).client.port),
            ]
            for (name, port) in targets {
                let lines = try Self.client(["relayed-errors", "--target", "127.0.0.1:\(port)", "--tls", tls])
                #expect(lines.count == 9, "\(name): \(lines)")
                for line in lines {
                    let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
                    print("\(name): \(String(decoding: data, as: UTF8.self))")
                    #expect(line["code"] as? String == line["expected"] as? String, "\(name): \(line)")
                    #expect(line["others_failed"] as? Int == 0, "\(name): \(line)")
                }
            }
            #expect(await cluster.waitForLeader() == leader)
            await cluster.closeConnections()
        }

        /// A client's bad request is the client's fault (security review F7): five ranges from a
        /// 5,000-byte bound are each answered 400, and the front still routes reads to every member.
        @Test func aBadRangeIsAnsweredFourHundredAndEjectsNoMember() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = try #require(cluster.ids.first { $0 != leader })
            #expect(await cluster.frontSeesEveryMemberReadable(front))
            let bound = Data(repeating: 0x61, count: 5000).base64EncodedString()
            for _ in 0..<5 {
                let reply = try await cluster.frontHTTP(front, "POST", "/v1/kv/range", json: #"{"from": "\#(bound)"}"#)
                #expect(reply.status == 400 && reply.text.contains("INVALID_ARGUMENT"), "\(reply.text)")
            }
            // The front polls every 200 ms (the default); three polls later every member must still be readable.
            try await Task.sleep(nanoseconds: 600_000_000)
            let members = await cluster.frontMembers(front)
            #expect(members.count == 3 && members.allSatisfy { $0["readable"] as? Bool == true }, "\(members)")
            await cluster.closeConnections()
        }
    }
}
