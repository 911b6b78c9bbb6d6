import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import Testing

/// crmctl and graceful shutdown against real processes.
extension RealProcessTests {
    @Suite struct OperatorToolTests {
        private func clusterFile(_ cluster: ProcessCluster) throws -> String { try cluster.writeClusterFile() }

        private func crmctl(
            _ arguments: [String], cluster file: String?, input: Data? = nil
        ) throws -> (status: Int32, output: String, errors: String) {
            try ProcessCluster.tool("crmctl", arguments + (file.map { ["--cluster", $0] } ?? []), input: input)
        }

        @Test func crmctlReportsEveryMemberAndUsesItsExitCodes() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let file = try clusterFile(cluster)

            // A young cluster may still hold an election between two reports: ask again (bounded)
            // until crmctl names the leader the members agree on.
            var report: [String: Any] = [:]
            let named = await eventually(seconds: 10) {
                guard let status = try? crmctl(["status", "--json", "--hash"], cluster: file), status.status == 0,
                    let object = try? JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
                else { return false }
                report = object
                let agreed = await cluster.waitForLeader(seconds: 2) ?? leader
                return object["leader_id"] as? Int == Int(agreed)
            }
            #expect(named, "crmctl status --json names the leader: \(report)")
            let members = report["members"] as! [[String: Any]]
            #expect(members.count == 3)
            for member in members {
                let id = UInt64(member["id"] as! Int)
                #expect(member["pid"] as? Int == Int(cluster.pid(id)!), "member \(id) pid")
                #expect((member["role"] as? String).map { ["leader", "follower"].contains($0) } == true)
                let endpoints = member["endpoints"] as! [String: String]
                #expect(endpoints["peer"] == "127.0.0.1:\(cluster.addresses(id).peer.port)")
                #expect(endpoints["client"] == "127.0.0.1:\(cluster.addresses(id).client.port)")
                #expect(endpoints["admin"] == "127.0.0.1:\(cluster.addresses(id).admin.port)")
                #expect((member["state_hash"] as? String)?.count == 64)
            }
            let table = try crmctl(["status"], cluster: file)
            #expect(table.status == 0 && table.output.hasPrefix("ID  ROLE"))
            #expect(table.output.split(separator: "\n").count >= 4)

            #expect(try crmctl(["kv", "put", "customer/1", "Ada"], cluster: file).status == 0)
            #expect(try crmctl(["kv", "get", "customer/1"], cluster: file).output == "Ada\n")
            // A value kept out of the process list: read from standard input.
            #expect(
                try crmctl(["kv", "put", "customer/2", "-"], cluster: file, input: Data("a secret\nof two lines".utf8))
                    .status == 0)
            #expect(try crmctl(["kv", "get", "customer/2"], cluster: file).output == "a secret\nof two lines\n")
            let missing = try crmctl(["kv", "get", "customer/404"], cluster: file)
            #expect(missing.status == 3 && missing.errors.contains("not found"))
            #expect(try crmctl(["kv", "cas", "customer/1", "Bob", "Eve"], cluster: file).status == 3)
            #expect(try crmctl(["kv", "cas", "customer/1", "Ada", "Grace"], cluster: file).status == 0)
            let range = try crmctl(["kv", "range", "customer/", "customer0", "--json"], cluster: file)
            #expect(range.output.contains("\"Grace\""))
            #expect(
                try crmctl(["members", "list"], cluster: file).output.contains(
                    "127.0.0.1:\(cluster.addresses(leader).peer.port)"))
            #expect(try crmctl(["snapshot"], cluster: file).status == 0)
            #expect(try crmctl(["verify"], cluster: file).output.contains("0 damaged"))

            let target = cluster.ids.first { $0 != leader }!
            let transfer = try crmctl(["leader", "transfer", "\(target)"], cluster: file)
            #expect(transfer.status == 0 && transfer.output.contains("member \(target) leads"), "\(transfer)")
            #expect(await cluster.waitForLeader() == target)

            #expect(try crmctl(["kv", "put"], cluster: file).status == 2)
            let noFile = try crmctl(["status"], cluster: cluster.directory + "/absent.json")
            #expect(noFile.status == 2 && noFile.errors.contains("make up"))
            for id in cluster.ids { cluster.kill9(id) }
            let down = try crmctl(["status"], cluster: file)
            #expect(down.status == 4)
            await cluster.closeConnections()
        }

        /// SIGTERM on the leader: it hands leadership to a caught-up voter before it exits, so a
        /// new leader serves at once instead of after an election timeout.
        @Test func sigtermOnTheLeaderHandsLeadershipOverBeforeExiting() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.put("before", "shutdown", via: leader)
            let started = Date()
            cluster.terminate(leader)
            let stopped = Date().timeIntervalSince(started)
            #expect(cluster.waitUntilExit(leader) == 0)
            #expect(cluster.log(leader).contains("leadership handed over"))
            let survivors = cluster.ids.filter { $0 != leader }
            let next = await cluster.waitForLeader(among: survivors, seconds: 5)
            #expect(next != nil)
            print(
                String(
                    format: "graceful shutdown of leader %llu took %.3f s; member %llu leads", leader, stopped,
                    next ?? 0))
            try await cluster.put("after", "shutdown", via: survivors[0])
            #expect(try await cluster.get("before", via: survivors[1]) == "shutdown")
            await cluster.closeConnections()
        }
    }
}
