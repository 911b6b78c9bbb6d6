import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Field history on real processes: updates through the leader write history rows; reading
/// them through a follower needs history.read (refused and audited as denied without it), and
/// answers old and new values, who and when, newest first, audited as `record.history`.
extension RealProcessTests {
    @Suite struct FieldHistoryProcessTests {
        @Test func updatesKeepHistoryThatOnlyHistoryReadersSee() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let follower = try #require(cluster.ids.first { $0 != leader })
            let writer = try cluster.connection(leader, .client).records
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = ["last_name": .with { $0.text = "Lovelace" }, "job_title": .with { $0.text = "Analyst" }]
            var record = try await writer.create(create, options: ProcessCluster.shortCall).record
            for title in ["Mathematician", "Programmer"] {
                var update = Crm_V1_UpdateRecordRequest()
                update.entity = "person"
                update.id = record.id
                update.expectedVersion = record.version
                update.set = ["job_title": .with { $0.text = title }]
                record = try await writer.update(update, options: ProcessCluster.shortCall).record
            }
            var asked = Crm_V1_HistoryRequest()
            asked.entity = "person"
            asked.id = record.id
            let reader = try cluster.connection(follower, .client).records
            do {
                _ = try await reader.history(asked, options: ProcessCluster.shortCall)
                Issue.record("history was read without history.read")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied && error.message.contains("history.read"), "\(error)")
            }
            var role = Crm_V1_PutRoleRequest()
            role.yaml = ProcessCluster.recordsRoleYAML() + "permissions: [history.read]\n"
            _ = try await cluster.connection(leader, .client, as: "crmctl").directory.putRole(
                role, metadata: ["authorization": "Bearer \(admin)"], options: ProcessCluster.shortCall)
            let items = try await reader.history(asked, options: ProcessCluster.shortCall).items
            #expect(items.count == 2, "\(items)")
            #expect(items.first?.changes.first?.field == "job_title")
            #expect(items.first?.changes.first?.oldValue.text == "Mathematician")
            #expect(items.first?.changes.first?.newValue.text == "Programmer")
            #expect(items.last?.changes.first?.oldValue.text == "Analyst")
            #expect(items.allSatisfy { $0.actor.hasPrefix("crm://user/") && $0.timeMs > 0 })

            let file = try cluster.writeClusterFile()
            // The update's entry names the written value only by a keyed digest.
            let updates = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "record.update", "--json", "--cluster", file])
            let entries =
                (try? JSONSerialization.jsonObject(with: Data(updates.output.utf8))) as? [[String: Any]] ?? []
            let digests = entries.compactMap { $0["value_digests"] as? [String] }
            #expect(digests.count == 2 && digests.allSatisfy { $0.count == 1 }, "\(updates.output)")
            let hexLengths = digests.flatMap { $0 }.map { digest in digest.components(separatedBy: ":").last?.count ?? 0
            }
            #expect(hexLengths == [32, 32], "\(digests)")
            #expect(!updates.output.contains("Programmer") && !updates.output.contains("Mathematician"))
            let history = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "record.history", "--json", "--cluster", file])
            #expect(history.output.contains("\"done\"") && history.output.contains("\"denied\""), "\(history.output)")
            await cluster.closeConnections()
        }
    }
}
