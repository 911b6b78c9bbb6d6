import Foundation
import KVStore
import Testing

@testable import CRM

@Suite struct CustomFieldTests {
    private let marker = "Qwertzuiop-Marker"

    private func put(_ crm: TestCRM, _ entity: EntityCode, _ field: FieldDefinition) throws {
        let transaction = try #require(try crm.changes.putField(entity, field))
        guard case .transaction(.applied) = try crm.apply(transaction) else {
            throw RecordError.badRequest("the field change did not apply")
        }
    }

    private func spec(
        _ name: String, _ type: FieldType, personal: Bool = false, purpose: String? = nil
    )
        -> FieldDefinition
    {
        var field = FieldDefinition(0, name, type)
        field.personal = personal
        field.purpose = purpose
        return field
    }

    private func refusal(_ body: () throws -> Any?) -> String? {
        do {
            _ = try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func customFieldsAreMetadataSealedWhenPersonalAndFilterable() throws {
        let crm = try TestCRM()
        try put(crm, .person, spec("nickname", .text(maxBytes: 64), personal: true, purpose: "marketing"))
        try put(crm, .person, spec("tier", .choice(["gold", "silver"])))
        try put(crm, .company, spec("owner_email", .emails(maxItems: 2), personal: true, purpose: "billing"))
        let definition = try crm.changes.definition(.person)
        let nickname = try #require(definition.field(named: "nickname"))
        #expect(nickname.id == CRMLimits.firstCustomField && nickname.isCustom && nickname.purpose == "marketing")
        #expect(definition.field(named: "tier")?.id == CRMLimits.firstCustomField + 1)
        #expect(try crm.changes.definition(.deal).fields.allSatisfy { !$0.isCustom }, "per entity")

        let gold = try crm.create(.person, ["nickname": .text("Ace \(marker)"), "tier": .text("gold")])
        _ = try crm.create(.person, ["tier": .text("silver")])
        let read = try crm.read(.person, gold)
        #expect(try crm.changes.open(read.record, fields: nil)["nickname"] == .text("Ace \(marker)"))
        let stored = try #require(try crm.state.kv.crmValue(CRMLayout.record(workspace: 1, entity: .person, id: gold)))
        #expect(!stored.payload.contains(Array(marker.utf8)), "a personal custom field is sealed")
        #expect(stored.payload.contains(Array("gold".utf8)))
        let golds = try crm.changes.list(ListQuery(entity: .person, filters: ["tier": .text("gold")]), after: nil)
        #expect(golds.records.map(\.record.id) == [gold])
        #expect(
            refusal { try crm.changes.list(ListQuery(entity: .person, filters: ["nickname": .text("x")]), after: nil) }?
                .contains("personal") == true)
        #expect(refusal { try crm.create(.person, ["tier": .text("bronze")]) }?.contains("must be one of") == true)
        // A company's personal custom field is sealed under the workspace's subject.
        let company = try crm.create(.company, ["name": .text("Solo"), "owner_email": .texts(["Me@Solo.example"])])
        let companyRecord = try crm.read(.company, company)
        #expect(companyRecord.record.subject == CRMLayout.workspaceSubject)
        #expect(try crm.changes.open(companyRecord.record, fields: nil)["owner_email"] == .texts(["me@solo.example"]))
        #expect(try crm.check() == [])
    }

    @Test func aFieldWidensButNeverChangesTypeOrPersonalAndOnlyOneChangeWinsARace() throws {
        let crm = try TestCRM()
        try put(crm, .deal, spec("region", .choice(["emea", "apac"])))
        try put(crm, .deal, spec("seats", .integer(min: 0, max: 100)))
        #expect(try crm.changes.putField(.deal, spec("region", .choice(["emea", "apac"]))) == nil, "already so")
        try put(crm, .deal, spec("region", .choice(["emea", "apac", "amer"])))
        try put(crm, .deal, spec("seats", .integer(min: 0, max: 10_000)))
        #expect(try crm.changes.definition(.deal).field(named: "region")?.type == .choice(["emea", "apac", "amer"]))
        for (change, why) in [
            (spec("region", .choice(["emea"])), "dropping a choice"),
            (spec("seats", .integer(min: 1, max: 10_000)), "narrowing a range"),
            (spec("seats", .text(maxBytes: 10)), "another type"),
            (spec("seats", .integer(min: 0, max: 10_000), personal: true, purpose: "sales"), "becoming personal"),
        ] {
            #expect(refusal { try crm.changes.putField(.deal, change) }?.contains("cannot change") == true, "\(why)")
        }
        for (bad, expected) in [
            (spec("Name", .bool), "a-z first"), (spec("x-y", .bool), "a-z first"),
            (spec(String(repeating: "a", count: 49), .bool), "1 to 48"),
            (spec("secret", .text(maxBytes: 10), personal: true), "needs a purpose"),
            (spec("links", .targets(maxItems: 2)), "targets"), (spec("c", .choice([])), "distinct choices"),
            (spec("d", .choice(["a", "a"])), "distinct choices"), (spec("e", .integer(min: 5, max: 1)), "min above"),
            (spec("f", .text(maxBytes: 1 << 20)), "text size"), (spec("name", .bool), "standard field"),
        ] {
            #expect(refusal { try crm.changes.putField(.deal, bad) }?.contains(expected) == true, "\(expected)")
        }
        // Two changes made from the same metadata version: the second fails its condition.
        let first = try #require(try crm.changes.putField(.deal, spec("a", .bool)))
        let second = try #require(try crm.changes.putField(.deal, spec("b", .bool)))
        guard case .transaction(.applied) = try crm.apply(first),
            case .transaction(.conditionFailed) = try crm.apply(second)
        else {
            Issue.record("the second change of one metadata version applied")
            return
        }
        #expect(try crm.changes.definition(.deal).field(named: "b") == nil)
    }

    @Test func aRetiredFieldIsRefusedInWritesAbsentFromReadsAndItsIdAndNameStayTaken() throws {
        let crm = try TestCRM()
        try put(crm, .person, spec("shoe_size", .integer(min: 1, max: 60)))
        let id = try crm.create(.person, ["last_name": .text("Doe"), "shoe_size": .integer(42)])
        let retire = try #require(try crm.changes.retireField(.person, name: "shoe_size"))
        try crm.apply(retire)
        #expect(try crm.changes.retireField(.person, name: "shoe_size") == nil, "already retired")
        #expect(refusal { try crm.changes.retireField(.person, name: "last_name") }?.contains("standard") == true)
        #expect(refusal { try crm.changes.retireField(.person, name: "nope") }?.contains("no field") == true)
        let read = try crm.read(.person, id)
        #expect(try crm.changes.open(read.record, fields: nil) == ["last_name": .text("Doe")])
        #expect(refusal { try crm.create(.person, ["shoe_size": .integer(40)]) }?.contains("no field") == true)
        #expect(
            refusal { try crm.changes.putField(.person, spec("shoe_size", .integer(min: 1, max: 60))) }?
                .contains("retired") == true)
        try put(crm, .person, spec("hat_size", .integer(min: 1, max: 70)))
        #expect(try crm.changes.definition(.person).field(named: "hat_size")?.id == CRMLimits.firstCustomField + 1)
        // The next write of the record drops the retired value.
        try crm.apply(try crm.changes.update(read, set: ["hat_size": .integer(7)], clear: []))
        let after = try crm.read(.person, id)
        #expect(after.record.fields[CRMLimits.firstCustomField] == nil)
        #expect(after.record.fields[CRMLimits.firstCustomField + 1] != nil)
        #expect(try crm.check() == [])
    }

    @Test func metadataRoundTripsAndRefusesDamage() throws {
        var personal = FieldDefinition(1000, "a", .emails(maxItems: 3), personal: true, purpose: "p")
        personal.retired = true
        let fields = [
            personal, FieldDefinition(1001, "b", .integer(min: -5, max: 5)),
            FieldDefinition(1002, "c", .choice(["x", "y"])),
            FieldDefinition(1003, "d", .references(.company, maxItems: 4)),
            FieldDefinition(1004, "e", .texts(maxItems: 2, maxBytes: 9)), FieldDefinition(1005, "f", .money),
        ]
        let encoded = CustomFieldCoding.encode(fields)
        #expect(CustomFieldCoding.decode(encoded) == fields)
        #expect(CustomFieldCoding.decode(encoded + [0]) == nil)
        #expect(CustomFieldCoding.decode(Array(encoded.dropLast())) == nil)
        var standardID = encoded
        standardID[3...4] = [0, 5] // the first field's id below the custom range
        #expect(CustomFieldCoding.decode(standardID) == nil)
    }
}
