import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// The records API on real processes: writes through any front, versions, idempotent creates,
/// lookups, and personal data absent from every member's files.
extension RealProcessTests {
    @Suite struct RecordsProcessTests {
        static let marker = "Qzxmarker"

        static func text(_ value: String) -> Crm_V1_FieldValue { .with { $0.text = value } }
        static func texts(_ values: [String]) -> Crm_V1_FieldValue { .with { $0.texts = .with { $0.items = values } } }

        @Test func recordsAreWrittenThroughAnyFrontVersionedAndNeverStoredInTheClear() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.signInRecordsUser()
            let followers = cluster.ids.filter { $0 != leader }
            let viaFollower = try cluster.frontConnection(followers[0]).records
            let viaOther = try cluster.frontConnection(followers[1]).records

            // Create through a follower's front (the leader makes the transaction), with a
            // request id: a retry creates once.
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.requestID = "import-42"
            create.fields = [
                "first_name": Self.text("Ada \(Self.marker)"), "last_name": Self.text("Lovelace"),
                "emails": Self.texts(["ADA.\(Self.marker)@Example.com"]), "source": Self.text("fair \(Self.marker)"),
            ]
            let created = try await viaFollower.create(create, options: ProcessCluster.shortCall).record
            let again = try await viaOther.create(create, options: ProcessCluster.shortCall).record
            #expect(created.id.count == 32 && again.id == created.id && again.version == created.version)
            #expect(created.fields["emails"]?.texts.items == ["ada.\(Self.marker.lowercased())@example.com"])
            #expect(created.owner.hasPrefix("crm://user/"), "owned by the signed-in user: \(created.owner)")

            // Read back from the other follower, linearizably; only the fields asked for.
            var get = Crm_V1_GetRecordRequest()
            get.entity = "person"
            get.id = created.id
            get.fields = ["last_name"]
            let read = try await viaOther.get(get, options: ProcessCluster.shortCall).record
            #expect(read.fields.keys.sorted() == ["last_name"] && read.version == created.version)

            // Two updates from the same version: one wins, the other is ABORTED with the current one.
            var update = Crm_V1_UpdateRecordRequest()
            update.entity = "person"
            update.id = created.id
            update.expectedVersion = created.version
            update.set = ["city": Self.text("London")]
            let updated = try await viaOther.update(update, options: ProcessCluster.shortCall).record
            #expect(updated.version > created.version && updated.fields["city"]?.text == "London")
            update.set = ["city": Self.text("Paris")]
            do {
                _ = try await viaFollower.update(update, options: ProcessCluster.shortCall)
                Issue.record("a stale update was applied")
            } catch let error as RPCError {
                #expect(error.code == .aborted, "\(error)")
                #expect(
                    error.metadata[stringValues: "crm-current-version"].first(where: { _ in true })
                        == "\(updated.version)")
            }
            update.expectedVersion = 0
            await #expect(throws: RPCError.self) {
                try await viaFollower.update(update, options: ProcessCluster.shortCall)
            }

            // Lookup by e-mail in another case and form; by an invalid phone: refused.
            var lookup = Crm_V1_LookupRequest()
            lookup.entity = "person"
            lookup.by = "email"
            lookup.value = " Ada.\(Self.marker)@EXAMPLE.com "
            let found = try await viaFollower.lookup(lookup, options: ProcessCluster.shortCall).records
            #expect(found.map(\.id) == [created.id])
            lookup.by = "phone"
            lookup.value = "020 7946 0958"
            await #expect(throws: RPCError.self) {
                try await viaFollower.lookup(lookup, options: ProcessCluster.shortCall)
            }

            // Bad input: a clear error naming the field, never the value, and nothing written.
            for (fields, entity) in [
                (["nickname": Self.text("x")], "person"),
                (["emails": Self.texts(["no-at-sign-\(Self.marker)"])], "person"),
                (["first_name": .with { $0.integer = 3 }], "person"), (["name": Self.text("x")], "planet"),
            ] {
                var bad = Crm_V1_CreateRecordRequest()
                bad.entity = entity
                bad.fields = fields
                do {
                    _ = try await viaFollower.create(bad, options: ProcessCluster.shortCall)
                    Issue.record("\(fields.keys) on \(entity) was accepted")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument && !error.message.contains(Self.marker), "\(error)")
                }
            }

            // Trash, then destroy: gone for reads and lookups.
            var delete = Crm_V1_VersionedRecordRequest()
            delete.entity = "person"
            delete.id = created.id
            delete.expectedVersion = updated.version
            let trashed = try await viaFollower.delete(delete, options: ProcessCluster.shortCall).record
            #expect(trashed.deleted)
            lookup.by = "email"
            lookup.value = "ada.\(Self.marker)@example.com"
            #expect(try await viaOther.lookup(lookup, options: ProcessCluster.shortCall).records.isEmpty)
            delete.expectedVersion = trashed.version
            _ = try await viaOther.destroy(delete, options: ProcessCluster.shortCall)
            do {
                _ = try await viaFollower.get(get, options: ProcessCluster.shortCall)
                Issue.record("a destroyed record was read")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
            }

            // Every member's files: the marker is nowhere (records, index keys, the log, logs).
            try await Task.sleep(nanoseconds: 500_000_000)
            cluster.stopAll()
            var scanned = 0
            for id in cluster.ids {
                let files = FileManager.default.enumerator(atPath: cluster.directory + "/node-\(id)")
                while let name = files?.nextObject() as? String {
                    let path = cluster.directory + "/node-\(id)/" + name
                    guard let data = FileManager.default.contents(atPath: path) else { continue }
                    scanned += data.count
                    #expect(data.range(of: Data(Self.marker.utf8)) == nil, "\(name) of member \(id) holds the marker")
                    #expect(
                        data.range(of: Data(Self.marker.lowercased().utf8)) == nil,
                        "\(name) of member \(id) holds the marker")
                }
                if let log = FileManager.default.contents(atPath: cluster.directory + "/node-\(id).log") {
                    #expect(log.range(of: Data(Self.marker.utf8)) == nil, "member \(id)'s log holds the marker")
                }
            }
            #expect(scanned > 100_000, "the scan read the members' files (\(scanned) bytes)")
        }

        /// A member with another CRM key raises CRMKEY and serves no CRM call; one without a key
        /// answers UNAVAILABLE; neither answers with ciphertext, and the others go on serving.
        @Test func aMemberWithAnotherCRMKeyOrNoneServesNoRecords() async throws {
            let cluster = try ProcessCluster { config in
                if config.id == 3 { config.crm?.keyFile = "certs/crm-other.key" }
            }
            let other = cluster.directory + "/certs/crm-other.key"
            let hex = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            FileManager.default.createFile(
                atPath: other, contents: Data((hex + "\n").utf8), attributes: [.posixPermissions: 0o600])
            // Members 1 and 2 (the cluster's key) elect a leader; member 3 joins after it, and
            // the leader creates the key set once every member has reported.
            try cluster.start(1)
            try cluster.start(2)
            let leader = try #require(await cluster.waitForLeader(among: [1, 2]))
            try cluster.start(3)
            try await cluster.signInRecordsUser()
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = ["first_name": Self.text("Grace"), "emails": Self.texts(["grace@example.com"])]
            var created = Crm_V1_Record()
            let first = await eventually(seconds: 10) {
                do {
                    created = try await cluster.frontConnection(leader).records.create(
                        create, options: ProcessCluster.shortCall
                    ).record
                    return true
                } catch let error as RPCError {
                    return error.code != .failedPrecondition ? true : false
                } catch {
                    return false
                }
            }
            #expect(first && created.id.count == 32, "the first record was not created")
            #expect(await cluster.waitForLeader() == leader)

            var get = Crm_V1_GetRecordRequest()
            get.entity = "person"
            get.id = created.id
            let raised = await eventually(seconds: 10) {
                let state = try? await cluster.connection(3).kv.memberState(
                    Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
                return state?.alarms.contains { $0.kind == .crmkey } ?? false
            }
            #expect(raised, "member 3 raised no CRMKEY alarm")
            do {
                _ = try await cluster.frontConnection(3).records.get(get, options: ProcessCluster.shortCall)
                Issue.record("member 3 served a record under another key")
            } catch let error as RPCError {
                #expect(error.code == .dataLoss, "\(error)")
                #expect(error.metadata[stringValues: "crm-alarm"].contains("CRMKEY"))
            }
            do {
                _ = try await cluster.frontConnection(3).records.create(create, options: ProcessCluster.shortCall)
                Issue.record("member 3 took a write")
            } catch let error as RPCError {
                #expect(error.code == .dataLoss, "\(error)")
            }
            #expect(
                try await cluster.frontConnection(1).records.get(get, options: ProcessCluster.shortCall).record.id
                    == created.id)

            // Member 2 restarted without a key: UNAVAILABLE, refused (safe to send elsewhere).
            cluster.terminate(2)
            let config = cluster.directory + "/node-2.yaml"
            let text = try String(contentsOfFile: config, encoding: .utf8)
            try text.replacingOccurrences(of: "  key_file: certs/crm.key\n", with: "").write(
                toFile: config, atomically: true, encoding: .utf8)
            try cluster.start(2)
            let refused = await eventually(seconds: 10) {
                do {
                    _ = try await cluster.frontConnection(2).records.get(get, options: ProcessCluster.shortCall)
                    return false
                } catch let error as RPCError {
                    return error.code == .unavailable
                        && error.metadata[stringValues: "crm-refused"].first(where: { _ in true }) != nil
                } catch {
                    return false
                }
            }
            #expect(refused, "member 2 without a CRM key did not refuse")
            #expect(
                try await cluster.frontConnection(1).records.get(get, options: ProcessCluster.shortCall).record.fields[
                    "first_name"]?.text == "Grace")
        }

        @Test func describeListsTheFieldsAndWhichArePersonal() async throws {
            let cluster = try ProcessCluster(ids: [1])
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            var request = Crm_V1_DescribeRequest()
            request.entity = "person"
            // Before the first user exists, nobody uses records (an application's certificate
            // alone never did so since users came).
            do {
                _ = try await cluster.connection(1).records.describe(request, options: ProcessCluster.shortCall)
                Issue.record("records answered before any user existed")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition && error.message.contains("bootstrap"), "\(error)")
            }
            try await cluster.signInRecordsUser()
            let described = try await cluster.frontConnection(1).records.describe(
                request, options: ProcessCluster.shortCall)
            let emails = try #require(described.fields.first { $0.name == "emails" })
            #expect(emails.personal && emails.lookup == "email" && emails.type == "emails")
            #expect(described.fields.first { $0.name == "source" }?.personal == false)
        }
    }
}
