import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// The exfiltration guard on real processes: a user reading the personal data of more distinct
/// subjects in an hour than `crm.max_subjects_per_hour` is stopped on every member, the security
/// administrators are alerted, and a user administrator's unlock lifts it.
extension RealProcessTests {
    @Suite struct ExfiltrationGuardProcessTests {
        @Test func personalReadsPastTheBoundAreStoppedEverywhereUntilUnlocked() async throws {
            let cluster = try ProcessCluster { $0.crm?.maxSubjectsPerHour = 5 }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let acting: Metadata = ["authorization": "Bearer \(admin)"]
            let followers = cluster.ids.filter { $0 != leader }
            let writer = try cluster.connection(leader, .client).records
            var ids: [String] = []
            for index in 0..<7 {
                var create = Crm_V1_CreateRecordRequest()
                create.entity = "person"
                create.fields = [
                    "last_name": .with { $0.text = "Subject \(index)" }, "source": .with { $0.text = "fair" },
                ]
                ids.append(try await writer.create(create, options: ProcessCluster.shortCall).record.id)
            }
            func get(_ id: String, on member: UInt64, fields: [String] = []) async throws -> Crm_V1_Record {
                var request = Crm_V1_GetRecordRequest()
                request.entity = "person"
                request.id = id
                request.fields = fields
                return try await cluster.connection(member, .client).records.get(
                    request, options: ProcessCluster.shortCall
                ).record
            }
            // Six subjects, spread over both followers: the sixth is released and takes the user
            // past the bound of five.
            for (index, id) in ids.prefix(6).enumerated() {
                #expect(try await get(id, on: followers[index % 2]).fields["last_name"] != nil)
            }
            // From now on every member refuses this user's personal reads, naming why...
            for member in cluster.ids {
                do {
                    _ = try await get(ids[6], on: member)
                    Issue.record("member \(member) released personal data past the bound")
                } catch let error as RPCError {
                    #expect(error.code == .permissionDenied && error.message.contains("reads are stopped"), "\(error)")
                }
            }
            // ...but not the non-personal fields.
            #expect(try await get(ids[6], on: leader, fields: ["source"]).fields["source"]?.text == "fair")

            // The security administrators see an alert and the user's state.
            let directory = try cluster.connection(leader, .client, as: "crmctl").directory
            let alerts = try await directory.listAlerts(
                Crm_V1_ListAlertsRequest(), metadata: acting, options: ProcessCluster.shortCall
            ).alerts
            let alert = try #require(alerts.first { $0.kind == "exfiltration" }, "\(alerts.map(\.kind))")
            let users = try await directory.listUsers(
                Crm_V1_ListUsersRequest(), metadata: acting, options: ProcessCluster.shortCall
            ).users
            let reader = try #require(users.first { $0.username == "records-harness" })
            #expect(alert.userID == reader.userID && reader.readsStopped && !reader.locked)

            // An unlock lifts it, and is audited.
            var unlock = Crm_V1_UnlockUserRequest()
            unlock.userID = reader.userID
            #expect(
                !(try await directory.unlockUser(unlock, metadata: acting, options: ProcessCluster.shortCall)
                    .readsStopped))
            #expect(try await get(ids[6], on: followers[0]).fields["last_name"] != nil)
            let file = try cluster.writeClusterFile()
            let trail = try ProcessCluster.tool("crmctl", ["audit", "tail", "-n", "40", "--json", "--cluster", file])
            #expect(trail.output.contains("\"alert.exfiltration\"") && trail.output.contains("\"user.unlock\""))
            await cluster.closeConnections()
        }
    }
}
