import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Operators' acts and the audit queue on real processes: `crmctl keys rotate` is in the audit
/// trail before it happens (`keys.rotate_data`, by the operator's tool, naming the member). A
/// follower whose audit batches are slowed (the fault hook) fills its queue of asynchronous read
/// entries, refuses further reads UNAVAILABLE, raises AUDIT_BACKLOG (its peers do not) and
/// counts the refusals in `/metrics`; once the trail keeps up again every read it served is in
/// the trail, exactly once.
extension RealProcessTests {
    @Suite struct AuditBacklogProcessTests {
        static func entries(_ output: String) -> [[String: Any]] {
            (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [[String: Any]] ?? []
        }

        static func metric(_ name: String, in body: String) -> Double? {
            body.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
                Double($0.split(separator: " ").last ?? "")
            }
        }

        @Test func aFullAuditQueueRefusesReadsAndRaisesAuditBacklog() async throws {
            let cluster = try ProcessCluster {
                $0.crm?.auditReads = .async
                $0.crm?.auditQueueEntries = 100
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            _ = try await cluster.signInRecordsUser()
            let follower = try #require(cluster.ids.first { $0 != leader })
            let file = try cluster.writeClusterFile()

            // A data-key rotation on the follower, and its entry.
            let rotated = try ProcessCluster.tool(
                "crmctl", ["keys", "rotate", "--member", "\(follower)", "--cluster", file])
            #expect(rotated.status == 0, "\(rotated.errors)")
            let rotations = Self.entries(
                try ProcessCluster.tool(
                    "crmctl", ["audit", "query", "--action", "keys.rotate_data", "--json", "--cluster", file]
                ).output)
            #expect(rotations.count == 1, "\(rotations)")
            #expect(rotations.first?["actor"] as? String == "crm://client/crmctl")
            #expect((rotations.first?["reason"] as? String)?.hasPrefix("member \(follower) storage data key") == true)
            #expect(rotations.first?["outcome"] as? String == "done")

            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = ["last_name": .with { $0.text = "Hopper" }]
            let id = try await cluster.connection(leader, .client).records.create(
                create, options: ProcessCluster.shortCall
            ).record.id

            // Each audit batch of the follower now waits 3 s: its queue of 100 entries fills.
            try cluster.setFault(follower, \.auditAppendDelayMilliseconds, 3000)
            try await Task.sleep(for: .seconds(1))
            let reader = try cluster.connection(follower, .client).records
            var get = Crm_V1_GetRecordRequest()
            get.entity = "person"
            get.id = id
            var served = 0
            var refused: RPCError?
            for _ in 0..<2000 where refused == nil {
                do {
                    _ = try await reader.get(get, options: ProcessCluster.shortCall)
                    served += 1
                } catch let error as RPCError where error.code == .unavailable {
                    refused = error
                }
            }
            let refusal = try #require(refused, "2000 reads and the queue never filled")
            #expect(refusal.message.contains("not keeping up") && served >= 100, "\(refusal) after \(served)")
            #expect(await eventually(seconds: 10) { await cluster.alarms(follower).contains(.auditBacklog) })
            for member in cluster.ids where member != follower {
                #expect(!(await cluster.alarms(member).contains(.auditBacklog)), "member \(member) raised it too")
            }
            let metrics = await cluster.health(follower).body
            #expect((Self.metric("crm_audit_queue_refused_total", in: metrics) ?? 0) >= 1, "\(metrics.suffix(2000))")

            // The trail catches up: every read served is in it once, the queue empties.
            try cluster.clearFaults(follower)
            let drained = await eventually(seconds: 30) {
                Self.metric("crm_audit_queue_entries", in: await cluster.health(follower).body) == 0
            }
            #expect(drained, "the follower's audit queue never emptied")
            let reads = Self.entries(
                try ProcessCluster.tool(
                    "crmctl",
                    ["audit", "query", "--action", "record.read", "--limit", "10000", "--json", "--cluster", file]
                ).output)
            #expect(reads.count == served, "\(reads.count) entries for \(served) reads served")
            await cluster.closeConnections()
        }
    }
}
