import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Custom fields on real processes: added through one front's HTTP API and usable at once
/// through another's, sealed when personal, widened, refused when changed, retired, and shown
/// by `crmctl records describe`.
extension RealProcessTests {
    @Suite struct CustomFieldProcessTests {
        static let marker = "Plokijmarker"

        private func json(_ response: HTTPSRequest.Response) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any]) ?? [:]
        }

        private func fieldNames(_ described: [String: Any]) -> [String] {
            ((described["fields"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
        }

        @Test func customFieldsAddedThroughOneFrontAreUsableThroughAnotherAtOnceAndRetire() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let adminToken = try await cluster.signInRecordsUser()
            let followers = cluster.ids.filter { $0 != leader }
            let (first, second) = (followers[0], followers[1])
            // Fields are configuration: a role administrator adds them, not the records user.
            let admin = [
                ("Authorization", "Bearer \(try await cluster.signIn("admin-harness", through: "app", leader: leader))")
            ]
            let denied = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person:putField", json: #"{"name": "x", "type": "text"}"#)
            #expect(denied.status == 403 && denied.text.contains("role.admin"), "\(denied.text)")

            let added = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person:putField",
                json:
                    #"{"name": "loyalty_id", "type": "text", "max_bytes": 64, "personal": true, "purpose": "loyalty"}"#,
                headers: admin)
            #expect(added.status == 200, "\(added.text)")
            let tier = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person:putField",
                json: #"{"name": "tier", "type": "choice", "choices": ["gold", "silver"]}"#, headers: admin)
            #expect(fieldNames(json(tier)).suffix(2) == ["loyalty_id", "tier"], "\(tier.text)")
            // A new personal field is hidden from every role until one names it.
            let hidden = try await cluster.frontHTTP(first, "GET", "/v1/records/person:describe")
            #expect(!fieldNames(json(hidden)).contains("loyalty_id") && fieldNames(json(hidden)).contains("tier"))
            var role = Crm_V1_PutRoleRequest()
            role.yaml = ProcessCluster.recordsRoleYAML(extraFields: [.person: ["loyalty_id"]])
            _ = try await cluster.connection(leader, .client).directory.putRole(
                role, metadata: ["authorization": "Bearer \(adminToken)"], options: ProcessCluster.shortCall)

            // Straight away through the other follower's front: the field is known there.
            let created = try await cluster.frontHTTP(
                second, "POST", "/v1/records/person",
                json: #"{"fields": {"last_name": "Lamarr", "loyalty_id": "L-\#(Self.marker)", "tier": "gold"}}"#)
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(json(created)["id"] as? String)
            let version = try #require(json(created)["version"] as? Int)
            let read = try await cluster.frontHTTP(first, "GET", "/v1/records/person/\(id)")
            #expect((json(read)["fields"] as? [String: Any])?["loyalty_id"] as? String == "L-\(Self.marker)")
            let golds = try await cluster.frontHTTP(
                second, "POST", "/v1/records/person:list", json: #"{"filters": {"tier": "gold"}}"#)
            #expect(((json(golds)["records"] as? [[String: Any]]) ?? []).count == 1, "\(golds.text)")
            let personalFilter = try await cluster.frontHTTP(
                second, "POST", "/v1/records/person:list", json: #"{"filters": {"loyalty_id": "x"}}"#)
            #expect(personalFilter.status == 400 && personalFilter.text.contains("personal"))

            // Widening is allowed; a change of type or of personal is refused, naming the rule.
            let widened = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person:putField",
                json: #"{"name": "tier", "type": "choice", "choices": ["gold", "silver", "bronze"]}"#, headers: admin)
            #expect(widened.status == 200, "\(widened.text)")
            for body in [
                #"{"name": "tier", "type": "text"}"#, #"{"name": "tier", "type": "choice", "choices": ["gold"]}"#,
                #"{"name": "loyalty_id", "type": "text", "max_bytes": 64}"#, #"{"name": "Bad Name", "type": "text"}"#,
                #"{"name": "secret", "type": "text", "personal": true}"#, #"{"name": "x", "type": "planet"}"#,
                #"{"name": "first_name", "type": "text"}"#, #"{"name": "y", "type": "text", "id": 7}"#,
            ] {
                let refused = try await cluster.frontHTTP(
                    first, "POST", "/v1/records/person:putField", json: body, headers: admin)
                #expect(refused.status == 400, "\(body): \(refused.status) \(refused.text)")
            }

            // crmctl describes the fields with their purposes.
            let file = try cluster.writeClusterFile()
            let described = try ProcessCluster.tool(
                "crmctl",
                ["records", "describe", "person", "--json", "--cluster", file, "--token-file", cluster.tokenFile()])
            #expect(described.status == 0, "\(described.errors)")
            let fields =
                (try? JSONSerialization.jsonObject(with: Data(described.output.utf8)) as? [String: Any])?["fields"]
                as? [[String: Any]] ?? []
            let loyalty = fields.first { $0["name"] as? String == "loyalty_id" }
            #expect(loyalty?["purpose"] as? String == "loyalty" && loyalty?["custom"] as? Bool == true)
            #expect(
                fields.first { $0["name"] as? String == "emails" }?["purpose"] as? String == "customer_relationship")

            // Retired through crmctl: refused in writes, absent from reads, its name not used again.
            let adminFile = cluster.directory + "/token-admin"
            #expect(
                FileManager.default.createFile(
                    atPath: adminFile, contents: Data(adminToken.utf8), attributes: [.posixPermissions: 0o600]))
            let retired = try ProcessCluster.tool(
                "crmctl", ["records", "retire-field", "person", "tier", "--cluster", file, "--token-file", adminFile])
            #expect(retired.status == 0, "\(retired.errors)")
            let afterRetire = try await cluster.frontHTTP(second, "GET", "/v1/records/person/\(id)")
            #expect((json(afterRetire)["fields"] as? [String: Any])?["tier"] == nil, "\(afterRetire.text)")
            #expect(json(afterRetire)["version"] as? Int == version, "retiring changes no record")
            let refusedWrite = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person", json: #"{"fields": {"tier": "gold"}}"#)
            #expect(refusedWrite.status == 400 && refusedWrite.text.contains("no field"), "\(refusedWrite.text)")
            let reused = try await cluster.frontHTTP(
                first, "POST", "/v1/records/person:putField", json: #"{"name": "tier", "type": "boolean"}"#,
                headers: admin)
            #expect(reused.status == 400 && reused.text.contains("retired"), "\(reused.text)")
            let check = try ProcessCluster.tool("crmctl", ["crm", "check", "--cluster", file])
            #expect(check.status == 0, "\(check.output) \(check.errors)")

            // The personal custom value is in no member's files.
            try await Task.sleep(nanoseconds: 500_000_000)
            cluster.stopAll()
            for member in cluster.ids {
                let files = FileManager.default.enumerator(atPath: cluster.directory + "/node-\(member)")
                while let name = files?.nextObject() as? String {
                    guard let data = FileManager.default.contents(atPath: cluster.directory + "/node-\(member)/" + name)
                    else { continue }
                    #expect(data.range(of: Data(Self.marker.utf8)) == nil, "\(name) of member \(member) holds it")
                }
            }
        }
    }
}
