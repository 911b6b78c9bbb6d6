import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// A CRM key-set rotation whose re-wrap job loses its leader midway, on real processes: the new
/// leader resumes from the saved cursor, the old version retires, and every person stays
/// readable on every member.
extension RealProcessTests {
    @Suite struct CRMRewrapProcessTests {
        static func text(_ value: String) -> Crm_V1_FieldValue { .with { $0.text = value } }

        private func keyStatus(_ cluster: ProcessCluster, _ id: UInt64) async -> Crm_V1_CRMKeyStatusResponse? {
            try? await cluster.connection(id, admin: true).admin.crmKeyStatus(
                Crm_V1_CRMKeyStatusRequest(), options: ProcessCluster.shortCall)
        }

        /// Creates `count` persons through `front`, eight at a time; their ids.
        private func createPersons(
            _ cluster: ProcessCluster, _ front: UInt64, _ count: Int, _ tag: String
        )
            async throws -> [String]
        {
            let records = try cluster.frontConnection(front).records
            return try await withThrowingTaskGroup(of: [String].self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        var ids: [String] = []
                        for number in stride(from: lane, to: count, by: 8) {
                            var create = Crm_V1_CreateRecordRequest()
                            create.entity = "person"
                            create.requestID = "\(tag)-\(number)"
                            create.fields = ["last_name": Self.text("P\(number)"), "city": Self.text("C\(number)")]
                            ids.append(try await records.create(create, options: ProcessCluster.shortCall).record.id)
                        }
                        return ids
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        }

        @Test func aRewrapResumesUnderANewLeaderAfterTheOldOneIsKilledMidway() async throws {
            // One batch (128 subject keys) a second, so that the job takes several seconds.
            let cluster = try ProcessCluster { $0.crm?.rewrapBatchesPerSecond = 1 }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let before = try await createPersons(cluster, leader, 600, "before")
            #expect(Set(before).count == 600)

            let file = try cluster.writeClusterFile()
            let rotated = try ProcessCluster.tool("crmctl", ["keys", "crm-rotate", "--cluster", file])
            #expect(rotated.status == 0, "\(rotated.output) \(rotated.errors)")
            // Midway: at least one batch done, the job still running; then the leader dies.
            var midway: Crm_V1_CRMKeyStatusResponse?
            let started = await eventually(seconds: 15) {
                guard let status = await keyStatus(cluster, leader), status.rewrapRunning, status.rewrapDone >= 128
                else { return false }
                midway = status
                return true
            }
            #expect(started, "the re-wrap did not get going")
            #expect(midway?.rewrapDone ?? 0 < 600 && midway?.storedVersions == [1, 2], "\(String(describing: midway))")
            cluster.kill9(leader)
            let others = cluster.ids.filter { $0 != leader }
            let newLeader = try #require(await cluster.waitForLeader(among: others))
            // Writes go on under the new set while the job resumes; the old leader comes back.
            let during = try await createPersons(cluster, newLeader, 40, "during")
            try cluster.start(leader)

            var finished: [UInt64: Crm_V1_CRMKeyStatusResponse] = [:]
            let done = await eventually(seconds: 60) {
                for id in cluster.ids {
                    guard let status = await keyStatus(cluster, id), !status.rewrapRunning else { return false }
                    finished[id] = status
                }
                return true
            }
            #expect(done, "the re-wrap did not finish on every member: \(finished)")
            for (id, status) in finished {
                #expect(status.versionInUse == 2 && status.storedVersions == [2], "member \(id): \(status)")
                #expect(status.problem.isEmpty, "member \(id): \(status.problem)")
            }
            #expect(cluster.log(newLeader).contains("CRM re-wrap done"), "the new leader finished the job")

            // Every person opens on every member (serializable reads: each member's own state).
            for id in cluster.ids {
                let records = try cluster.frontConnection(id).records
                for person in [before.first!, before[299], before.last!, during.first!, during.last!] {
                    var get = Crm_V1_GetRecordRequest()
                    get.entity = "person"
                    get.id = person
                    get.serializable = true
                    let read = await eventually(seconds: 10) {
                        (try? await records.get(get, options: ProcessCluster.shortCall).record.fields["city"]) != nil
                    }
                    #expect(read, "member \(id) cannot open person \(person)")
                }
            }
            let check = try ProcessCluster.tool("crmctl", ["crm", "check", "--cluster", file])
            #expect(check.status == 0, "\(check.output) \(check.errors)")
            #expect(check.output.contains(": 642 records,"), "640 persons and the 2 harness users: \(check.output)")
        }
    }
}
