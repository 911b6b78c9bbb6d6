import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Lists, batch gets, links, crmctl's records and crm commands, and a CRM key-set rotation
/// under writes, on real processes.
extension RealProcessTests {
    @Suite struct RecordListProcessTests {
        static func text(_ value: String) -> Crm_V1_FieldValue { .with { $0.text = value } }

        private func crmctl(
            _ arguments: [String], _ file: String, input: Data? = nil
        ) throws -> (
            status: Int32, output: String, errors: String
        ) {
            let session =
                arguments.first == "records"
                ? ["--token-file", (file as NSString).deletingLastPathComponent + "/token-crmctl"] : []
            return try ProcessCluster.tool("crmctl", arguments + ["--cluster", file] + session, input: input)
        }

        private func create(
            _ records: Crm_V1_Records.Client<some ClientTransport>, _ entity: String,
            _ fields: [String: Crm_V1_FieldValue]
        ) async throws -> Crm_V1_Record {
            var request = Crm_V1_CreateRecordRequest()
            request.entity = entity
            request.fields = fields
            return try await records.create(request, options: ProcessCluster.shortCall).record
        }

        @Test func listsPageWithSealedTokensLinksMoveIndexesAndARotationKeepsEverythingReadable() async throws {
            let cluster = try ProcessCluster(clients: ["app", "other"])
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser(clients: ["crmctl", "app", "other"], principals: ["app", "other"])
            let follower = try #require(cluster.ids.first { $0 != leader })
            let records = try cluster.frontConnection(follower).records
            let file = try cluster.writeClusterFile()

            let company = try await create(records, "company", ["name": Self.text("Acme")])
            var persons: [Crm_V1_Record] = []
            for number in 0..<12 {
                persons.append(
                    try await create(
                        records, "person",
                        [
                            "last_name": Self.text("Person \(number)"),
                            "emails": .with { $0.texts = .with { $0.items = ["p\(number)@example.com"] } },
                        ]))
            }
            // Link half of them to the company through the follower's front.
            for person in persons.prefix(6) {
                var link = Crm_V1_LinkRequest()
                link.entity = "person"
                link.id = person.id
                link.expectedVersion = person.version
                link.target = .with {
                    $0.entity = "company"
                    $0.id = company.id
                }
                let linked = try await records.link(link, options: ProcessCluster.shortCall).record
                #expect(linked.fields["company_id"]?.reference == company.id && linked.version > person.version)
            }
            var list = Crm_V1_ListRecordsRequest()
            list.entity = "person"
            list.by = "company"
            list.value = company.id
            list.pageSize = 4
            let first = try await records.list(list, options: ProcessCluster.shortCall)
            #expect(first.records.count == 4 && !first.nextPageToken.isEmpty)
            list.pageToken = first.nextPageToken
            let second = try await records.list(list, options: ProcessCluster.shortCall)
            #expect(second.records.count == 2 && second.nextPageToken.isEmpty)
            #expect(Set((first.records + second.records).map(\.id)) == Set(persons.prefix(6).map(\.id)))

            // A token altered, used by another application, or for another list: refused.
            var altered = Array(first.nextPageToken)
            altered[altered.count / 2] = altered[altered.count / 2] == "A" ? "B" : "A"
            list.pageToken = String(altered)
            await expectInvalid { try await records.list(list, options: ProcessCluster.shortCall) }
            list.pageToken = first.nextPageToken
            let other = try cluster.frontConnection(follower, client: "other").records
            await expectInvalid { try await other.list(list, options: ProcessCluster.shortCall) }
            list.value = persons[0].id // another company: another list
            await expectInvalid { try await records.list(list, options: ProcessCluster.shortCall) }
            // A filter on a personal field is refused; one on a non-personal field narrows.
            var filtered = Crm_V1_ListRecordsRequest()
            filtered.entity = "person"
            filtered.filters = ["last_name": Self.text("Person 1")]
            await expectInvalid { try await records.list(filtered, options: ProcessCluster.shortCall) }

            var batch = Crm_V1_BatchGetRecordsRequest()
            batch.entity = "person"
            let absent = String(repeating: "0f", count: 16)
            batch.ids = [persons[0].id, absent, persons[11].id]
            batch.fields = ["last_name"]
            let got = try await records.batchGet(batch, options: ProcessCluster.shortCall)
            #expect(got.records.map(\.id) == [persons[0].id, persons[11].id] && got.missing == [absent])
            #expect(got.records.allSatisfy { $0.fields.keys.sorted() == ["last_name"] })

            // crmctl: a list through the client API, a lookup from standard input, describe.
            let listed = try crmctl(["records", "list", "person", "--all-pages", "--page-size", "5", "--json"], file)
            #expect(listed.status == 0, "\(listed.errors)")
            let listedObject = try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [String: Any]
            #expect((listedObject?["records"] as? [Any])?.count == 12)
            let looked = try crmctl(
                ["records", "lookup", "person", "--by", "email", "-", "--json"], file,
                input: Data("P3@Example.com\n".utf8))
            #expect(looked.status == 0 && looked.output.contains(persons[3].id), "\(looked.errors)")
            #expect(try crmctl(["records", "describe", "deal"], file).output.contains("point_of_contact"))

            // Rotate the CRM key set while an application keeps creating persons.
            let writer = Task {
                var made: [String] = []
                for number in 0..<20 {
                    if let record = try? await create(
                        records, "person", ["last_name": Self.text("During \(number)")])
                    {
                        made.append(record.id)
                    }
                }
                return made
            }
            try await Task.sleep(for: .milliseconds(100))
            let rotated = try crmctl(["keys", "crm-rotate", "--json"], file)
            #expect(rotated.status == 0, "\(rotated.errors)")
            let during = await writer.value
            #expect(during.count == 20, "every create during the rotation succeeded")
            var statusText = ""
            let retired = await eventually(seconds: 20) {
                guard let status = try? crmctl(["keys", "crm-status", "--json"], file), status.status == 0,
                    let members = try? JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [[String: Any]]
                else { return false }
                statusText = status.output
                return members.count == 3
                    && members.allSatisfy {
                        $0["version_in_use"] as? Int == 2 && $0["rewrap_running"] as? Bool == false
                    }
            }
            #expect(retired, "the re-wrap finished on every member: \(statusText)")
            // Old and new persons are found by their e-mail and open on every member's front.
            for id in cluster.ids {
                var lookup = Crm_V1_LookupRequest()
                lookup.entity = "person"
                lookup.by = "email"
                lookup.value = "p0@example.com"
                let found = try await cluster.frontConnection(id).records.lookup(
                    lookup, options: ProcessCluster.shortCall
                ).records
                #expect(found.map(\.id) == [persons[0].id])
                #expect(found.first?.fields["emails"]?.texts.items == ["p0@example.com"])
            }
            let check = try crmctl(["crm", "check", "--json"], file)
            #expect(check.status == 0, "crm check: \(check.output) \(check.errors)")
            // 33 records and the 2 harness users.
            #expect(check.output.contains("\"records\":35") || check.output.contains("\"records\" : 35"))
        }

        /// The short form of `crm-bench crm`: every operation at two client counts, without errors.
        @Test func crmBenchRunsEveryRecordsOperationNextToKV() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let file = try cluster.writeClusterFile()
            let run = try ProcessCluster.tool(
                "crm-bench",
                [
                    "crm", "--cluster", file, "--persons", "200", "--companies", "10", "--kv-keys", "200", "--clients",
                    "1,4",
                    "--duration", "0.5", "--warmup", "0.1", "--json", "--login-as", "records-harness",
                ], input: Data((ProcessCluster.harnessPassword + "\n").utf8))
            try #require(run.status == 0, "crm-bench crm failed: \(run.errors)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
            let rows = try #require(json["rows"] as? [[String: Any]])
            #expect(rows.count == 14, "7 operations at 2 client counts")
            for row in rows {
                #expect((row["operations"] as? Int ?? 0) > 0, "\(row)")
                // Records calls are authorized (the members' histogram moved); KV calls are not.
                let isRecords = !((row["op"] as? String ?? "").hasPrefix("kv-"))
                #expect((row["authorization_checks"] as? Double ?? 0 > 0) == isRecords, "\(row)")
                #expect((row["errors"] as? [String: Int])?.isEmpty == true, "\(row)")
            }
            #expect(
                Set(rows.compactMap { $0["op"] as? String }) == [
                    "create", "update", "get", "lookup", "list", "kv-put", "kv-get",
                ])
        }

        private func expectInvalid(_ call: () async throws -> some Any) async {
            do {
                _ = try await call()
                Issue.record("the call was not refused")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument, "\(error)")
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
