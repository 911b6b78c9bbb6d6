import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Collectors and pruning on real processes: `crmctl audit pull` keeps a verified copy and
/// acknowledges it, `--follow` keeps it going while the leader is killed (every entry written
/// reaches the copy); pruning needs audit.prune (a records user is refused), goes only below
/// the collectors and checkpoints, and leaves a trail that still verifies on every member and
/// that a new collector starts from; `audit query` finds entries by action and record.
extension RealProcessTests {
    @Suite struct AuditRetentionProcessTests {
        private func crmctl(
            _ arguments: [String], _ file: String
        ) throws -> (status: Int32, output: String, errors: String) {
            try ProcessCluster.tool("crmctl", arguments + ["--cluster", file])
        }

        private func head(_ file: String) throws -> [String: Any] {
            let run = try crmctl(["audit", "head", "--json"], file)
            return ((try? JSONSerialization.jsonObject(with: Data(run.output.utf8))) as? [[String: Any]])?.first ?? [:]
        }

        private func copySeq(_ directory: String) -> Int {
            guard let data = FileManager.default.contents(atPath: directory + "/collector.json"),
                let state = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            else { return 0 }
            return state["seq"] as? Int ?? 0
        }

        @Test func collectorsKeepACopyThroughALeaderKillAndPruningStaysBehindThem() async throws {
            let cluster = try ProcessCluster { $0.crm?.auditCheckpointSeconds = 1 }
            try cluster.startAll()
            var leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let file = try cluster.writeClusterFile()
            func create(_ name: String) async throws -> String {
                var create = Crm_V1_CreateRecordRequest()
                create.entity = "company"
                create.fields = ["name": .with { $0.text = name }]
                let current = try #require(await cluster.waitForLeader(among: cluster.ids.filter(cluster.isRunning)))
                return try await cluster.connection(current, .client).records.create(
                    create, options: ProcessCluster.shortCall
                ).record.id
            }
            let company = try await create("Analytical Engines")

            // A keeper of the trail: audit.prune (and nothing that touches records).
            let acting: Metadata = ["authorization": "Bearer \(admin)"]
            let directory = try cluster.connection(leader, .client, as: "crmctl").directory
            var role = Crm_V1_PutRoleRequest()
            role.yaml = "name: trail-keeper\npermissions: [audit.prune, audit.read]\n"
            _ = try await directory.putRole(role, metadata: acting, options: ProcessCluster.shortCall)
            var keeper = Crm_V1_CreateUserRequest()
            keeper.username = "trail-keeper"
            keeper.password = ProcessCluster.harnessPassword + " at first"
            keeper.roles = ["trail-keeper"]
            _ = try await directory.createUser(keeper, metadata: acting, options: ProcessCluster.shortCall)
            let token = try await cluster.signIn(
                "trail-keeper", first: ProcessCluster.harnessPassword + " at first", through: "crmctl", leader: leader)
            let tokenFile = cluster.directory + "/keeper.token"
            FileManager.default.createFile(
                atPath: tokenFile, contents: Data(token.utf8), attributes: [.posixPermissions: 0o600])
            let prune = { (below: Int) throws in
                try crmctl(["audit", "prune", "--below", "\(below)", "--token-file", tokenFile, "--json"], file)
            }

            // Nothing goes before a collector holds it.
            let early = try prune(1_000_000)
            #expect(early.status == 0 && early.output.contains("\"removed\" : 0"), "\(early)")

            // A collector follows the trail while entries are written and the leader is killed.
            let vault = cluster.directory + "/vault"
            let follower = Process()
            follower.executableURL = ProcessCluster.binaries.appendingPathComponent("crmctl")
            follower.arguments = [
                "audit", "pull", "--to", vault, "--collector", "vault", "--follow", "--interval-ms", "200", "--cluster",
                file,
            ]
            follower.standardOutput = FileHandle.nullDevice
            FileManager.default.createFile(atPath: cluster.directory + "/pull.log", contents: nil)
            follower.standardError = FileHandle(forWritingAtPath: cluster.directory + "/pull.log")
            try follower.run()
            defer { if follower.isRunning { follower.terminate() } }
            for index in 0..<5 { _ = try await create("Before \(index)") }
            cluster.kill9(leader)
            for index in 0..<5 { _ = try await create("During \(index)") }
            leader = try #require(await cluster.waitForLeader(among: cluster.ids.filter(cluster.isRunning)))
            for index in 0..<5 { _ = try await create("After \(index)") }
            let written = try #require(try head(file)["seq"] as? Int)
            #expect(
                await eventually(seconds: 20) { copySeq(vault) >= written }, "the copy stopped at \(copySeq(vault))")
            // The collector's acknowledgement and the checkpoints bound pruning.
            let acknowledged = await eventually(seconds: 15) {
                let collectors = (try? head(file)["collectors"] as? [[String: Any]]) ?? []
                return collectors.contains { $0["name"] as? String == "vault" && ($0["seq"] as? Int ?? 0) >= written }
            }
            #expect(acknowledged, "\(String(describing: try? head(file)["collectors"]))")
            follower.terminate()
            follower.waitUntilExit()
            try cluster.start(try #require(cluster.ids.first { !cluster.isRunning($0) }))
            #expect(await cluster.waitForLeader() != nil)
            #expect(await eventually(seconds: 15) { ((try? head(file)["checked_seq"] as? Int) ?? 0) >= written })

            // A records user may not prune.
            var asked = Crm_V1_PruneAuditRequest()
            asked.belowSeq = 5
            do {
                _ = try await cluster.connection(leader, .client, as: "app").directory.pruneAudit(
                    asked, options: ProcessCluster.shortCall)
                Issue.record("a records user pruned the audit trail")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied, "\(error)")
            }
            let pruned = try prune(1_000_000)
            #expect(pruned.status == 0, "\(pruned.errors)")
            let base = try #require(try head(file)["base_seq"] as? Int)
            let now = try #require(try head(file)["seq"] as? Int)
            #expect(base >= written - 1 && base < now, "base \(base), acknowledged \(written), head \(now)")

            // What is left verifies everywhere; the pruning is itself an entry.
            let verified = try crmctl(["audit", "verify", "--all-members"], file)
            #expect(verified.status == 0, "\(verified.output)\(verified.errors)")
            let query = try crmctl(["audit", "query", "--action", "audit.prune", "--json"], file)
            #expect(query.output.contains("\"audit.prune\"") && query.output.contains("removed"), "\(query.output)")
            let byRecord = try crmctl(["audit", "query", "--record", company, "--json"], file)
            #expect(!byRecord.output.contains(company), "the entry that created it was pruned")
            // The old collector carries on past the pruning; a new one starts at the base.
            #expect(try crmctl(["audit", "pull", "--to", vault, "--collector", "vault"], file).status == 0)
            let fresh = try crmctl(
                ["audit", "pull", "--to", cluster.directory + "/fresh", "--collector", "fresh"], file)
            #expect(fresh.status == 0, "\(fresh.errors)")
            await cluster.closeConnections()
        }
    }
}
