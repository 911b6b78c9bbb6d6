import CRMStateSupport
import Foundation
import KVStore
import Testing

@testable import CRM

/// Written personal values in the audit trail: a keyed digest per value, equal for the same
/// value of the same field and record, unequal otherwise, never the value itself; it round-trips
/// in the entry (format 3) and cannot be made again once the subject's key is gone.
@Suite struct ValueDigestTests {
    @Test func writesCarryKeyedDigestsThatErasureVoids() throws {
        let crm = try TestCRM()
        let id = try crm.create(.person, ["last_name": .text("Lovelace")])
        let input: [String: FieldValue] = ["last_name": .text("Byron"), "source": .text("fair")]
        let digests = try crm.changes.valueDigests(input, entity: .person, record: id, subject: id)
        let lastName = try #require(try crm.changes.definition(.person).field(named: "last_name"))
        #expect(digests.map(\.field) == [lastName.id], "only the personal field")
        #expect(try crm.changes.valueDigests(input, entity: .person, record: id, subject: id) == digests)
        let other = try crm.changes.valueDigests(
            ["last_name": .text("Lovelace")], entity: .person, record: id, subject: id)
        #expect(other != digests)

        var entry = AuditEntry(
            action: "record.update", actor: "crm://user/x", application: "crm://client/app", entity: .person,
            records: [id], subjects: [id], fields: [lastName.id])
        entry.valueDigests = digests
        let encoded = entry.encoded
        #expect(AuditEntry(encoded: encoded) == entry)
        #expect(Data(encoded).range(of: Data("Byron".utf8)) == nil)
        entry.valueDigests = []
        #expect(AuditEntry(encoded: entry.encoded)?.valueDigests == [])

        // Erased (the record and its key destroyed): no digest can be made any more.
        try crm.apply(crm.changes.destroy(try crm.read(.person, id)))
        #expect(try crm.changes.valueDigests(input, entity: .person, record: id, subject: id).isEmpty)
    }
}
