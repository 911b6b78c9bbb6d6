import CRMStateSupport
import Foundation
import KVStore
import Testing

@testable import CRM

/// Field history: an update writes a row of the changed personal and tracked fields (old and
/// new, who, when) in its own transaction, sealed under the subject's key so that no plaintext
/// is stored and erasing the subject erases it; untracked fields and unchanged values write
/// nothing; rows past the retention are found for the sweep.
@Suite struct FieldHistoryTests {
    private let marker = "Qwertzuiop-History"

    @Test func anUpdateKeepsOldAndNewValuesSealedUnderTheSubjectsKey() throws {
        let crm = try TestCRM()
        let id = try crm.create(.person, ["last_name": .text("Lovelace"), "job_title": .text(marker)])
        let before = try crm.read(.person, id)
        let stamp = HistoryStamp(actor: "crm://user/alice", atMillis: 50_000)
        try crm.apply(
            crm.changes.update(before, set: ["job_title": .text("Analyst")], clear: [], history: stamp))
        let entries = try crm.changes.history(of: try crm.read(.person, id).record, limit: 10)
        let title = try #require(
            try crm.changes.definition(.person).field(named: "job_title"))
        #expect(entries.count == 1 && entries[0].stamp == stamp)
        #expect(entries[0].changes == [FieldChange(field: title.id, old: .text(marker), new: .text("Analyst"))])
        // Sealed: the old value is nowhere in the store in clear.
        let rows = try crm.state.kv.crmScan(
            from: CRMLayout.workspaceKey(1, "/h/"), to: CRMLayout.end(of: CRMLayout.workspaceKey(1, "/h/")), limit: 10)
        #expect(rows.entries.count == 1)
        #expect(!rows.entries.contains { Data($0.value.payload).range(of: Data(marker.utf8)) != nil })

        // Setting the same value again, or no history stamp, writes no row.
        let now = try crm.read(.person, id)
        try crm.apply(crm.changes.update(now, set: ["job_title": .text("Analyst")], clear: [], history: stamp))
        #expect(try crm.changes.history(of: try crm.read(.person, id).record, limit: 10).count == 1)

        // Erasing the subject (its key goes with the record) leaves nothing readable.
        let last = try crm.read(.person, id)
        try crm.apply(crm.changes.destroy(last))
        #expect(try crm.changes.history(of: last.record, limit: 10).isEmpty)
    }

    @Test func aDealsStageIsTrackedAndRowsPastTheRetentionAreFound() throws {
        let crm = try TestCRM()
        let deal = try crm.create(.deal, ["name": .text("Engines"), "stage": .text("new")])
        for (index, stage) in ["qualified", "proposal"].enumerated() {
            let current = try crm.read(.deal, deal)
            try crm.apply(
                crm.changes.update(
                    current, set: ["stage": .text(stage)], clear: [],
                    history: HistoryStamp(actor: "crm://user/bob", atMillis: UInt64(100_000 + index * 1000))))
        }
        // A change of an untracked field writes no row.
        try crm.apply(
            crm.changes.update(
                try crm.read(.deal, deal), set: ["name": .text("Analytical Engines")], clear: [],
                history: HistoryStamp(actor: "crm://user/bob", atMillis: 200_000)))
        let entries = try crm.changes.history(of: try crm.read(.deal, deal).record, limit: 10)
        #expect(entries.map(\.changes.first?.new) == [.text("proposal"), .text("qualified")], "newest first")
        let history = FieldHistory(kv: crm.state.kv)
        #expect(try history.expired(before: 100_500, after: nil, limit: 100).keys.count == 1)
        #expect(try history.expired(before: 1_000_000, after: nil, limit: 100).keys.count == 2)
        let firstPage = try history.expired(before: 1_000_000, after: nil, limit: 1)
        #expect(firstPage.keys.count == 1 && firstPage.next != nil)
    }

    /// A custom field put with tracking keeps its changes; switched off (a later put without
    /// it), it keeps none, and an untracked custom field never did. The flag survives the
    /// metadata record's encoding.
    @Test func aCustomFieldIsTrackedWhenItsDefinitionSaysSo() throws {
        let crm = try TestCRM()
        func put(_ name: String, tracked: Bool) throws {
            var spec = FieldDefinition(0, name, .text(maxBytes: 64))
            spec.tracked = tracked
            let change = try #require(try crm.changes.putField(.deal, spec))
            guard case .transaction(.applied) = try crm.apply(change) else {
                throw RecordError.badRequest("not applied")
            }
        }
        try put("region", tracked: true)
        try put("notes_ref", tracked: false)
        let definition = try crm.changes.definition(.deal)
        let region = try #require(definition.field(named: "region"))
        #expect(region.tracked && FieldHistory.tracks(region))
        #expect(try #require(definition.field(named: "notes_ref")).tracked == false)
        #expect(try #require(definition.field(named: "stage")).tracked, "a deal's stage is tracked by the catalogue")

        let deal = try crm.create(.deal, ["name": .text("Looms"), "region": .text("emea")])
        func change(_ set: [String: FieldValue], at millis: UInt64) throws {
            try crm.apply(
                crm.changes.update(
                    try crm.read(.deal, deal), set: set, clear: [],
                    history: HistoryStamp(actor: "crm://user/carol", atMillis: millis)))
        }
        try change(["region": .text("apac"), "notes_ref": .text("n-1")], at: 300_000)
        var entries = try crm.changes.history(of: try crm.read(.deal, deal).record, limit: 10)
        #expect(entries.count == 1)
        #expect(entries.first?.changes == [FieldChange(field: region.id, old: .text("emea"), new: .text("apac"))])

        try put("region", tracked: false)
        try change(["region": .text("amer")], at: 400_000)
        entries = try crm.changes.history(of: try crm.read(.deal, deal).record, limit: 10)
        #expect(entries.count == 1, "no row once tracking is off")
    }
}
