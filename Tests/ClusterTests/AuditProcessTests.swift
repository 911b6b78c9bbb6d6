import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// The audit trail on real processes: every change made through the records and directory APIs
/// leaves its entry, with the same chain on every member, read and checked by `crmctl audit`.
extension RealProcessTests {
    @Suite struct AuditProcessTests {
        static let marker = "Wqxauditmarker"

        private func crmctl(
            _ arguments: [String], _ file: String
        ) throws -> (status: Int32, output: String, errors: String) {
            try ProcessCluster.tool("crmctl", arguments + ["--cluster", file])
        }

        @Test func everyChangeLeavesItsEntryAndEveryMemberHoldsTheSameVerifiedChain() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            _ = try await cluster.signInRecordsUser()
            let file = try cluster.writeClusterFile()
            let records = try cluster.connection(leader, .client).records

            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = [
                "last_name": .with { $0.text = "Hopper \(Self.marker)" },
                "emails": .with { $0.texts = .with { $0.items = ["grace.\(Self.marker)@example.com"] } },
            ]
            create.requestID = "audit-create-1"
            let person = try await records.create(create, options: ProcessCluster.shortCall).record
            var update = Crm_V1_UpdateRecordRequest()
            update.entity = "person"
            update.id = person.id
            update.expectedVersion = person.version
            update.set = ["source": .with { $0.text = "fair" }]
            let updated = try await records.update(update, options: ProcessCluster.shortCall).record
            var delete = Crm_V1_VersionedRecordRequest()
            delete.entity = "person"
            delete.id = person.id
            delete.expectedVersion = updated.version
            _ = try await records.delete(delete, options: ProcessCluster.shortCall)

            // Each change is one entry, written in the step that made it: who, through which
            // application, on which record and subject, which fields; never the values.
            // (A signed checkpoint may land between them: the leader makes one now and then.)
            let tail = try crmctl(["audit", "tail", "-n", "6", "--json"], file)
            #expect(tail.status == 0, "\(tail.errors)")
            let entries = Array(
                ((try JSONSerialization.jsonObject(with: Data(tail.output.utf8)) as? [[String: Any]]) ?? []).filter {
                    $0["action"] as? String != "audit.checkpoint"
                }.suffix(3))
            #expect(
                entries.compactMap { $0["action"] as? String } == ["record.create", "record.update", "record.delete"])
            let created = try #require(entries.first)
            #expect((created["actor"] as? String)?.hasPrefix("crm://user/") == true)
            #expect(created["application"] as? String == "crm://client/crmctl")
            #expect(
                created["record_ids"] as? [String] == [person.id] && created["subject_ids"] as? [String] == [person.id])
            #expect(
                created["request_id"] as? String == "audit-create-1" && (created["field_ids"] as? [Int])?.count == 2)
            #expect((entries[1]["field_ids"] as? [Int])?.count == 1)
            #expect(!tail.output.contains(Self.marker) && !tail.output.lowercased().contains("hopper"))
            let sequence = entries.compactMap { $0["seq"] as? Int }
            #expect(sequence.count == 3 && sequence == sequence.sorted() && Set(sequence).count == 3)

            // The directory's changes too (the harness signed in, put a role and a user).
            let all = try crmctl(["audit", "tail", "-n", "1000", "--json"], file)
            let actions = Set(
                ((try JSONSerialization.jsonObject(with: Data(all.output.utf8)) as? [[String: Any]]) ?? []).compactMap {
                    $0["action"] as? String
                })
            for action in [
                "keys.create", "user.bootstrap", "login.success", "password.change", "role.put", "user.create",
            ] {
                #expect(actions.contains(action), "\(action) in \(actions.sorted())")
            }

            // Every member holds the same chain, and it verifies.
            var heads: Set<String> = []
            for _ in 0..<50 {
                let head = try crmctl(["audit", "head", "--json"], file)
                let rows = (try JSONSerialization.jsonObject(with: Data(head.output.utf8)) as? [[String: Any]]) ?? []
                heads = Set(rows.compactMap { "\($0["seq"] ?? "")/\($0["hash"] ?? "")" })
                if rows.count == 3 && heads.count == 1 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(heads.count == 1, "\(heads)")
            let verified = try crmctl(["audit", "verify", "--all-members", "--json"], file)
            #expect(verified.status == 0, "\(verified.output) \(verified.errors)")
            let results = (try JSONSerialization.jsonObject(with: Data(verified.output.utf8)) as? [[String: Any]]) ?? []
            #expect(
                results.count == 3 && results.allSatisfy { ($0["checked"] as? Int ?? 0) >= 10 && $0["problem"] == nil })

            // Heads saved earlier are anchors: a later verify checks those entries are unchanged
            // (here: an anchor altered, or beyond the chain, stands for a rewritten or cut chain).
            let anchors = cluster.directory + "/anchors.json"
            let saved = try crmctl(["audit", "head", "--json"], file).output
            try saved.write(toFile: anchors, atomically: true, encoding: .utf8)
            var another = create
            another.requestID = "audit-create-2"
            _ = try await records.create(another, options: ProcessCluster.shortCall)
            #expect(try crmctl(["audit", "verify", "--anchors", anchors], file).status == 0)
            let seq = try #require(
                ((try JSONSerialization.jsonObject(with: Data(saved.utf8)) as? [[String: Any]])?.first?["seq"] as? Int))
            let fromFive = try crmctl(["audit", "verify", "--from", "5", "--json"], file)
            let checkedFromFive =
                ((try JSONSerialization.jsonObject(with: Data(fromFive.output.utf8)) as? [[String: Any]])?.first?[
                    "checked"] as? Int) ?? 0
            #expect(fromFive.status == 0 && checkedFromFive >= seq - 4, "\(fromFive.output)")
            let forged = cluster.directory + "/forged.json"
            try "{\"seq\": \(seq), \"hash\": \"\(String(repeating: "ab", count: 32))\"}\n".write(
                toFile: forged, atomically: true, encoding: .utf8)
            let rewritten = try crmctl(["audit", "verify", "--anchors", forged], file)
            #expect(rewritten.status == 1 && rewritten.output.contains("was rewritten"), "\(rewritten.output)")
            try "{\"seq\": \(seq + 1000), \"hash\": \"00\"}\n".write(toFile: forged, atomically: true, encoding: .utf8)
            let cut = try crmctl(["audit", "verify", "--anchors", forged], file)
            #expect(cut.status == 1 && cut.output.contains("entries were removed"), "\(cut.output)")
        }

        /// Reads are audited before their answer leaves: through a follower too (its batch goes
        /// to the leader); a member that cannot reach a leader releases no personal data.
        @Test func readsAreAuditedBeforeTheyLeaveAndAMemberWithoutALeaderReleasesNoPersonalData() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            _ = try await cluster.signInRecordsUser()
            let file = try cluster.writeClusterFile()
            let follower = try #require(cluster.ids.first { $0 != leader })
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = [
                "last_name": .with { $0.text = "Lamarr \(Self.marker)" }, "source": .with { $0.text = "fair" },
            ]
            let person = try await cluster.connection(leader, .client).records.create(
                create, options: ProcessCluster.shortCall
            ).record
            let records = try cluster.connection(follower, .client).records
            var get = Crm_V1_GetRecordRequest()
            get.entity = "person"
            get.id = person.id
            #expect(try await records.get(get, options: ProcessCluster.shortCall).record.fields["last_name"] != nil)
            var lookup = Crm_V1_LookupRequest()
            lookup.entity = "person"
            lookup.by = "name"
            lookup.value = "lamarr \(Self.marker)"
            #expect(try await records.lookup(lookup, options: ProcessCluster.shortCall).records.count == 1)

            let tail = try crmctl(["audit", "tail", "-n", "2", "--json"], file)
            let entries = (try JSONSerialization.jsonObject(with: Data(tail.output.utf8)) as? [[String: Any]]) ?? []
            #expect(
                entries.compactMap { $0["action"] as? String } == ["record.read", "record.lookup"], "\(tail.output)")
            for entry in entries {
                #expect(
                    entry["record_ids"] as? [String] == [person.id] && entry["subject_ids"] as? [String] == [person.id])
                #expect((entry["field_ids"] as? [Int])?.contains(2) == true, "last_name is among the fields read")
            }
            #expect(!tail.output.contains(Self.marker))

            // A refusal is recorded too: a record that is not there, a field the entity lacks.
            var missing = get
            missing.id = String(repeating: "7", count: 32)
            var hidden = get
            hidden.fields = ["no_such_field"]
            for request in [missing, hidden] {
                await #expect(throws: RPCError.self) {
                    _ = try await records.get(request, options: ProcessCluster.shortCall)
                }
            }
            var denials: [[String: Any]] = []
            for _ in 0..<50 {
                let tail = try crmctl(["audit", "tail", "-n", "2", "--json"], file)
                denials = (try JSONSerialization.jsonObject(with: Data(tail.output.utf8)) as? [[String: Any]]) ?? []
                if denials.allSatisfy({ $0["outcome"] as? String == "denied" }) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(denials.compactMap { $0["outcome"] as? String } == ["denied", "denied"], "\(denials)")
            #expect(denials.compactMap { $0["action"] as? String } == ["record.read", "record.read"])
            #expect(denials.first?["record_ids"] as? [String] == [missing.id])
            #expect(denials.first?["reason"] as? String == "not found")
            #expect((denials.last?["reason"] as? String)?.contains("no_such_field") == true)

            // Alone, the follower has no leader to write the trail: a read of personal data is
            // refused; one of non-personal fields only is answered.
            for id in cluster.ids where id != follower { cluster.kill9(id) }
            get.serializable = true
            await #expect(throws: RPCError.self) {
                do { _ = try await records.get(get, options: ProcessCluster.shortCall) } catch let error as RPCError {
                    #expect(error.code == .unavailable && error.message.contains("audit trail"), "\(error)")
                    throw error
                }
            }
            get.fields = ["source"]
            #expect(
                try await records.get(get, options: ProcessCluster.shortCall).record.fields["source"]?.text == "fair")
        }
    }
}
