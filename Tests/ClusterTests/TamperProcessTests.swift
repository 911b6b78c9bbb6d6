import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Signed audit checkpoints and TAMPER on real processes: the leader's checkpoints verify against
/// the cluster CA; an entry changed in one member's store raises TAMPER there at the next
/// checkpoint, that member serves no data (its front reads elsewhere), and verify names the entry.
extension RealProcessTests {
    @Suite struct TamperProcessTests {
        private func crmctl(
            _ arguments: [String], _ file: String
        ) throws -> (
            status: Int32, output: String, errors: String
        ) {
            try ProcessCluster.tool("crmctl", arguments + ["--cluster", file])
        }

        private func verified(_ file: String) throws -> [[String: Any]] {
            let run = try crmctl(["audit", "verify", "--all-members", "--json"], file)
            return (try? JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [[String: Any]]) ?? []
        }

        @Test func aChangedEntryRaisesTamperAndTheMemberIsRoutedAround() async throws {
            let cluster = try ProcessCluster { $0.crm?.auditCheckpointSeconds = 1 }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let file = try cluster.writeClusterFile()
            let records = try cluster.connection(leader, .client).records
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "company"
            create.fields = ["name": .with { $0.text = "Analytical Engines" }]
            let company = try await records.create(create, options: ProcessCluster.shortCall).record

            // Checkpoints come, signed by the leader's member key, and verify on every member.
            let signed = await eventually(seconds: 15) {
                let results = (try? verified(file)) ?? []
                return results.count == 3 && results.allSatisfy { ($0["checkpoints"] as? Int ?? 0) > 0 }
            }
            #expect(signed, "no verified checkpoint on every member: \((try? verified(file)) ?? [])")

            // Change the newest entry in a follower's store, then add entries: the next
            // checkpoint finds it there.
            let follower = try #require(cluster.ids.first { $0 != leader })
            let firstHeads =
                (try? JSONSerialization.jsonObject(
                    with: Data(try crmctl(["audit", "head", "--json"], file).output.utf8)))
                as? [[String: Any]] ?? []
            let head = try #require(firstHeads.first { $0["member"] as? Int == Int(leader) }?["seq"] as? Int)
            #expect(
                await eventually(seconds: 10) {
                    let state = try? await cluster.connection(follower).kv.memberState(
                        Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
                    return (state?.appliedIndex ?? 0) > 0
                })
            try cluster.setFault(follower, \.tamperAuditSeq, UInt64(head))
            let raised = await eventually(seconds: 20) {
                _ = try? await records.create(create, options: ProcessCluster.shortCall)
                let state = try? await cluster.connection(follower).kv.memberState(
                    Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
                return state?.alarms.contains { $0.kind == .tamper } ?? false
            }
            #expect(raised, "the follower raised no TAMPER alarm")

            // It serves no data; its front reads through another member.
            var get = Crm_V1_GetRecordRequest()
            get.entity = "company"
            get.id = company.id
            do {
                _ = try await cluster.connection(follower, .client).records.get(get, options: ProcessCluster.shortCall)
                Issue.record("a member under TAMPER served a record")
            } catch let error as RPCError {
                #expect(
                    error.code == .dataLoss && error.metadata[stringValues: "crm-alarm"].contains("TAMPER"), "\(error)")
            }
            var lastError = ""
            let viaItsFront = await eventually(seconds: 10) {
                do {
                    _ = try await cluster.frontConnection(follower).records.get(get, options: ProcessCluster.shortCall)
                    return true
                } catch {
                    lastError = "\(error)"
                    return false
                }
            }
            #expect(viaItsFront, "the follower's front did not read through another member: \(lastError)")
            #expect(await cluster.waitForLeader() != follower)

            // Verify names the entry on that member and exits 1.
            let run = try crmctl(["audit", "verify", "--all-members"], file)
            #expect(run.status == 1, "\(run.output) \(run.errors)")
            #expect(run.output.contains("entry \(head): entry \(head) does not match its hash"), "\(run.output)")

            // The leader's own copy changed: it raises TAMPER at its next checkpoint and hands
            // leadership to the member that is still whole.
            let whole = try #require(cluster.ids.first { $0 != leader && $0 != follower })
            let heads =
                (try? JSONSerialization.jsonObject(
                    with: Data(try crmctl(["audit", "head", "--json"], file).output.utf8)))
                as? [[String: Any]] ?? []
            let newest = try #require(heads.first { $0["member"] as? Int == Int(whole) }?["seq"] as? Int, "\(heads)")
            try cluster.setFault(leader, \.tamperAuditSeq, UInt64(newest))
            let handedOff = await eventually(seconds: 30) {
                _ = try? await cluster.connection(whole, .client).records.create(
                    create, options: ProcessCluster.shortCall)
                return await cluster.waitForLeader(seconds: 1) == whole
            }
            #expect(handedOff, "leadership did not leave the member under TAMPER")
            let oldLeader = try? await cluster.connection(leader).kv.memberState(
                Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
            #expect(
                oldLeader?.alarms.contains { $0.kind == .tamper } == true, "\(String(describing: oldLeader?.alarms))")
            await cluster.closeConnections()
        }
    }
}
