import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Field history on real processes: updates through the leader write history rows; reading
/// them through a follower needs history.read (refused and audited as denied without it), and
/// answers old and new values, who and when, newest first, audited as `record.history`, over
/// gRPC and a front's HTTP API alike; a custom field put with `track_history` is kept too.
extension RealProcessTests {
    @Suite struct FieldHistoryProcessTests {
        static func items(_ body: Data) -> [[String: Any]] {
            ((try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["items"] as? [[String: Any]]) ?? []
        }

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
            // The same over a front's HTTP API.
            let overHTTP = try await cluster.frontHTTP(
                follower, "GET", "/v1/records/person/\(record.id):history?limit=1")
            let httpItems = Self.items(overHTTP.body)
            #expect(overHTTP.status == 200 && httpItems.count == 1, "\(overHTTP.text)")
            let change = (httpItems.first?["changes"] as? [[String: Any]])?.first
            #expect(change?["field"] as? String == "job_title" && change?["old"] as? String == "Mathematician")
            #expect(change?["new"] as? String == "Programmer")
            let badLimit = try await cluster.frontHTTP(
                follower, "GET", "/v1/records/person/\(record.id):history?limit=0")
            #expect(badLimit.status == 400, "\(badLimit.text)")

            // A custom field put with track_history keeps its changes; an untracked one does not.
            let fieldAdmin = [
                ("Authorization", "Bearer \(try await cluster.signIn("admin-harness", through: "app", leader: leader))")
            ]
            for (name, tracked) in [("region", true), ("ledger_ref", false)] {
                let put = try await cluster.frontHTTP(
                    leader, "POST", "/v1/records/deal:putField",
                    json: #"{"name": "\#(name)", "type": "text", "track_history": \#(tracked)}"#, headers: fieldAdmin)
                #expect(put.status == 200, "\(put.text)")
            }
            let described = try await cluster.frontHTTP(follower, "GET", "/v1/records/deal:describe")
            let fields =
                ((try? JSONSerialization.jsonObject(with: described.body) as? [String: Any])?["fields"]
                    as? [[String: Any]]) ?? []
            let tracked = Set(fields.filter { $0["tracked"] as? Bool == true }.compactMap { $0["name"] as? String })
            #expect(tracked == ["amount", "stage", "region"], "\(described.text)")
            var deal = Crm_V1_CreateRecordRequest()
            deal.entity = "deal"
            deal.fields = ["name": .with { $0.text = "Looms" }, "region": .with { $0.text = "emea" }]
            let created = try await writer.create(deal, options: ProcessCluster.shortCall).record
            var move = Crm_V1_UpdateRecordRequest()
            move.entity = "deal"
            move.id = created.id
            move.expectedVersion = created.version
            move.set = ["region": .with { $0.text = "apac" }, "ledger_ref": .with { $0.text = "L-7" }]
            _ = try await writer.update(move, options: ProcessCluster.shortCall)
            let dealHistory = Self.items(
                try await cluster.frontHTTP(follower, "GET", "/v1/records/deal/\(created.id):history").body)
            let changed = dealHistory.flatMap { ($0["changes"] as? [[String: Any]]) ?? [] }.compactMap {
                $0["field"] as? String
            }
            #expect(changed == ["region"], "\(dealHistory)")

            let file = try cluster.writeClusterFile()
            // The update's entry names the written value only by a keyed digest.
            let updates = try ProcessCluster.tool(
                "crmctl",
                ["audit", "query", "--action", "record.update", "--record", record.id, "--json", "--cluster", file])
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
