import CRMStateSupport
import Foundation
import KVStore
import Testing

@testable import CRM

/// A CRM on in-memory replicated state, with key set 1 in place.
final class TestCRM {
    let kek: TestKEK
    let state: TestState
    let changes: RecordChanges
    var clock: UInt64 = 10_000

    init() throws {
        kek = try TestKEK()
        state = try TestState()
        let keys = CRMKeyState(kek: .success(kek.provider), kv: state.kv)
        try state.apply(try KeySetChanges.first(kek: kek.provider).0)
        changes = RecordChanges(keys: keys, kv: state.kv)
    }

    @discardableResult
    func apply(_ transaction: Transaction) throws -> KVOutcome {
        clock += 1000
        return try state.apply(transaction, at: clock)
    }

    func create(
        _ entity: EntityCode, _ fields: [String: FieldValue], owner: String = "crm://client/app"
    ) throws -> CRMID {
        let id = try CRMID.random()
        let outcome = try apply(
            changes.create(entity, id: id, fields: fields, owner: owner, teams: [], principal: owner, now: clock))
        guard case .transaction(.applied) = outcome else { throw RecordError.tooLarge("create failed: \(outcome)") }
        return id
    }

    func read(_ entity: EntityCode, _ id: CRMID) throws -> VersionedRecord {
        guard let record = try changes.read(entity, id) else { throw RecordError.notFound(entity, id) }
        return record
    }

    func check() throws -> [String] { try CRMCheck(kv: state.kv).run().problems }

    /// Ids of the records of `entity` whose `lookup` token matches `value` (already normalised).
    func lookup(_ lookup: FieldLookup, _ value: String, _ entity: EntityCode) throws -> Set<CRMID> {
        let keySet = try #require(try changes.keys.inUse())
        let token = LookupTokens.token(purpose: lookup.rawValue, normalised: Array(value.utf8), keySet: keySet)
        let prefix = CRMLayout.indexPrefix(workspace: 1, lookup.rawValue, value: token) + Array(entity.rawValue.utf8)
        let page = try state.kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: 100)
        return Set(page.entries.compactMap { CRMID(bytes: Array($0.key.suffix(CRMID.byteCount))) })
    }
}

@Suite struct RecordTests {
    private let marker = "Zyxwvut-Marker"

    @Test func aPersonIsStoredSealedAndReadsBackNormalised() throws {
        let crm = try TestCRM()
        let id = try crm.create(
            .person,
            [
                "first_name": .text("Ada \(marker)"), "last_name": .text("Lovelace"),
                "emails": .texts([" ADA@Example.COM "]), "phones": .texts(["+44 (20) 7946-0958"]),
                "birthday": .date(year: 1815, month: 12, day: 10), "source": .text("conference \(marker)"),
                "lifecycle_stage": .text("lead"),
            ])
        let read = try crm.read(.person, id)
        #expect(read.record.subject == id)
        let values = try crm.changes.open(read.record, fields: nil)
        #expect(values["emails"] == .texts(["ada@example.com"]))
        #expect(values["phones"] == .texts(["+442079460958"]))
        #expect(values["first_name"] == .text("Ada \(marker)"))
        #expect(try crm.changes.open(read.record, fields: ["last_name"]) == ["last_name": .text("Lovelace")])
        // Personal fields are sealed; the non-personal `source` is not (it is sealed at rest by the
        // storage engine like every value).
        let stored = try #require(try crm.state.kv.crmValue(CRMLayout.record(workspace: 1, entity: .person, id: id)))
        #expect(stored.version == read.version)
        #expect(!stored.payload.contains(Array("Ada".utf8)))
        #expect(!stored.payload.contains(Array("example.com".utf8)))
        #expect(stored.payload.contains(Array("conference".utf8)))
        for key in read.record.indexKeys {
            #expect(!key.contains(Array("ada".utf8)) && !key.contains(Array(marker.utf8)))
        }
        #expect(try crm.lookup(.email, "ada@example.com", .person) == [id])
        #expect(try crm.lookup(.phone, "+442079460958", .person) == [id])
        #expect(try crm.lookup(.name, Normalise.name("ADA  \(marker) lovelace"), .person) == [id])
        #expect(try crm.check() == [])
    }

    @Test func theSameEmailOnTwoPersonsHasTwoCiphertextsAndOneToken() throws {
        let crm = try TestCRM()
        let first = try crm.create(.person, ["emails": .texts(["shared@example.com"])])
        let second = try crm.create(.person, ["emails": .texts(["Shared@Example.com"])])
        let one = try crm.read(.person, first).record.fields[3]
        let two = try crm.read(.person, second).record.fields[3]
        #expect(one != nil && one != two)
        #expect(try crm.lookup(.email, "shared@example.com", .person) == [first, second])
        #expect(try crm.check() == [])
    }

    @Test func anUpdateNeedsTheCurrentVersionAndMovesItsIndexEntries() throws {
        let crm = try TestCRM()
        let id = try crm.create(.person, ["emails": .texts(["old@example.com"]), "lifecycle_stage": .text("lead")])
        let before = try crm.read(.person, id)
        let update = try crm.changes.update(
            before, set: ["emails": .texts(["new@example.com"])], clear: ["lifecycle_stage"])
        let stale = try crm.changes.update(before, set: ["city": .text("London")], clear: [])
        guard case .transaction(.applied(let version)) = try crm.apply(update) else {
            Issue.record("the update did not apply")
            return
        }
        #expect(try crm.apply(stale) == .transaction(.conditionFailed(condition: 1, current: version)))
        let after = try crm.read(.person, id)
        #expect(after.version == version && after.updatedAtMillis > before.updatedAtMillis)
        let values = try crm.changes.open(after.record, fields: nil)
        #expect(
            values["emails"] == .texts(["new@example.com"]) && values["lifecycle_stage"] == nil && values["city"] == nil
        )
        #expect(try crm.lookup(.email, "old@example.com", .person).isEmpty)
        #expect(try crm.lookup(.email, "new@example.com", .person) == [id])
        #expect(try crm.check() == [])
    }

    @Test func trashUndeleteAndDestroyKeepTheIndexesTrueAndShredThePerson() throws {
        let crm = try TestCRM()
        let person = try crm.create(.person, ["first_name": .text("Grace"), "emails": .texts(["grace@example.com"])])
        let company = try crm.create(
            .company, ["name": .text("Analytical Engines"), "domain": .text("Engines.example.")])
        let deal = try crm.create(
            .deal,
            [
                "name": .text("Big one"), "amount": .money(micros: 5_000_000_000, currency: "GBP"),
                "stage": .text("proposal"), "company_id": .reference(company), "point_of_contact": .reference(person),
            ])
        let note = try crm.create(
            .activity,
            [
                "kind": .text("note"), "body": .text("met \(marker)"),
                "targets": .targets([RecordRef(entity: .company, id: company), RecordRef(entity: .person, id: person)]),
            ])
        let memo = try crm.create(.activity, ["kind": .text("note"), "title": .text("internal \(marker)")])
        #expect(try crm.read(.deal, deal).record.subject == nil, "a deal holds no personal data")
        #expect(try crm.read(.activity, note).record.subject == person, "sealed under its person's key")
        #expect(try crm.read(.activity, memo).record.subject == CRMLayout.workspaceSubject)
        #expect(try crm.lookup(.domain, "engines.example", .company) == [company])
        #expect(try crm.check() == [])

        try crm.apply(try crm.changes.setDeleted(try crm.read(.deal, deal), true))
        #expect(try crm.read(.deal, deal).record.deleted)
        #expect(try crm.check() == [])
        try crm.apply(try crm.changes.setDeleted(try crm.read(.deal, deal), false))
        #expect(try !crm.read(.deal, deal).record.deleted)
        #expect(try crm.check() == [])

        // Destroying the person removes its subject key: the note about it no longer opens.
        try crm.apply(crm.changes.destroy(try crm.read(.person, person)))
        #expect(try crm.changes.read(.person, person) == nil)
        #expect(try crm.lookup(.email, "grace@example.com", .person).isEmpty)
        #expect(throws: RecordError.self) {
            try crm.changes.open(try crm.read(.activity, note).record, fields: ["body"])
        }
        #expect(try crm.changes.open(try crm.read(.activity, note).record, fields: ["kind"]) == ["kind": .text("note")])
        #expect(
            try crm.changes.open(try crm.read(.activity, memo).record, fields: nil)["title"]
                == .text("internal \(marker)"))
        let problems = try crm.check()
        #expect(problems.count == 1 && problems[0].contains("has no subject key"), "the shredded note: \(problems)")
    }

    @Test func badInputIsRefusedByNameBeforeAnythingIsProposed() throws {
        let crm = try TestCRM()
        let cases: [(EntityCode, [String: FieldValue], String)] = [
            (.person, ["nickname": .text("x")], "has no field `nickname`"),
            (.person, ["version": .integer(1)], "has no field `version`"),
            (.person, ["owner": .text("someone")], "has no field `owner`"),
            (.person, ["subject": .text("x")], "has no field `subject`"),
            (.person, ["first_name": .integer(3)], "wrong type"),
            (.person, ["emails": .texts(["not-an-address"])], "invalid e-mail"),
            (.person, ["phones": .texts(["020 7946 0958"])], "E.164"),
            (.person, ["city": .text(String(repeating: "a", count: 1 << 20))], "longer than 4096 bytes"),
            (.person, ["city": .text("a\u{0}b")], "NUL"),
            (.person, ["tags": .texts(Array(repeating: "t", count: 10_000))], "at most 20 items"),
            (.person, ["birthday": .date(year: 10_000, month: 1, day: 1)], "not a date"),
            (.person, ["birthday": .date(year: 2023, month: 2, day: 29)], "not a date"),
            (.person, ["lifecycle_stage": .text("vip")], "must be one of"),
            (.deal, ["probability": .integer(101)], "0 to 100"),
            (.deal, ["amount": .money(micros: 1, currency: "pounds")], "ISO 4217"),
            (.activity, ["due_at": .timestamp(millis: UInt64.max)], "after the year 9999"),
            (.company, ["domain": .text("not a domain")], "not a domain name"),
        ]
        for (entity, fields, reason) in cases {
            #expect {
                try crm.changes.create(
                    entity, id: try CRMID.random(), fields: fields, owner: "crm://client/app", teams: [],
                    principal: "crm://client/app", now: 1)
            } throws: { error in
                let text = "\(error)"
                return text.contains(reason) && !text.contains("not-an-address") && !text.contains("0958")
            }
        }
        #expect(try CRMCheck(kv: crm.state.kv).run().records == 0)
    }

    @Test func storedRecordsRoundTripAndRefuseDamage() throws {
        var record = StoredRecord(
            entity: .deal, id: try CRMID.random(), owner: "crm://client/app", teams: [try CRMID.random()],
            subject: nil, createdAtMillis: 42, createdBy: "crm://client/app")
        record.fields = [1: .plain(FieldValue.text("x").encoded), 9_999: .sealed([1, 2, 3])]
        record.indexKeys = [[1, 2], [3]]
        let encoded = record.encoded
        #expect(StoredRecord(encoded: encoded) == record)
        for cut in 0..<encoded.count { #expect(StoredRecord(encoded: Array(encoded.prefix(cut))) == nil) }
        #expect(StoredRecord(encoded: encoded + [0]) == nil)
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(_ needle: [UInt8]) -> Bool {
        guard needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}
