import Foundation
import KVStore
import Testing

@testable import CRM

@Suite struct UserRecordTests {
    private func createUser(_ crm: TestCRM, _ username: String) throws -> (CRMID, KVOutcome) {
        let id = try CRMID.random()
        let outcome = try crm.apply(
            crm.changes.create(
                .user, id: id,
                fields: [
                    "username": .text(username), "display_name": .text("Ada Lovelace"),
                    "email": .texts(["ada@example.com"]), "status": .text("active"), "roles": .texts(["sales-rep"]),
                ],
                owner: "crm://client/admin", teams: [], principal: "crm://client/admin", now: crm.clock))
        return (id, outcome)
    }

    @Test func usersAreSealedRecordsWithAUniqueUsernameWhateverItsCaseOrForm() throws {
        let crm = try TestCRM()
        let (ada, created) = try createUser(crm, "Ada.L")
        guard case .transaction(.applied) = created else {
            Issue.record("the first user was not created: \(created)")
            return
        }
        let read = try crm.read(.user, ada)
        #expect(read.record.subject == ada, "a user is their own data subject")
        let stored = try #require(try crm.state.kv.crmValue(CRMLayout.record(workspace: 1, entity: .user, id: ada)))
        #expect(!stored.payload.contains(Array("Ada.L".utf8)) && !stored.payload.contains(Array("example".utf8)))
        #expect(try crm.changes.lookup(.user, by: .username, value: "ADA.l")?.map(\.record.id) == [ada])
        // The same name in another case or Unicode form is the same name: refused whole.
        for other in ["ada.l", " ADA.L ", "\u{FF21}da.L"] {
            let (_, outcome) = try createUser(crm, other)
            guard case .transaction(.conditionFailed) = outcome else {
                Issue.record("\(other) was created beside Ada.L: \(outcome)")
                continue
            }
        }
        for bad in ["ab", "has space", "semi;colon", String(repeating: "a", count: 65)] {
            #expect(throws: RecordError.self, "\(bad)") { try createUser(crm, bad) }
        }
        // A rename frees the old name for someone else; the new one is guarded too.
        let (grace, _) = try createUser(crm, "grace")
        try crm.apply(try crm.changes.update(try crm.read(.user, ada), set: ["username": .text("countess")], clear: []))
        guard
            case .transaction(.conditionFailed) = try crm.apply(
                try crm.changes.update(try crm.read(.user, grace), set: ["username": .text("Countess")], clear: []))
        else {
            Issue.record("grace took the name countess")
            return
        }
        let (taker, retaken) = try createUser(crm, "ada.l")
        guard case .transaction(.applied) = retaken else {
            Issue.record("the old name was not freed: \(retaken)")
            return
        }
        #expect(try crm.changes.lookup(.user, by: .username, value: "ada.l")?.map(\.record.id) == [taker])
        #expect(try crm.check() == [])
        // Destroying a user frees its name and its subject key.
        try crm.apply(crm.changes.destroy(try crm.read(.user, taker)))
        let (_, again) = try createUser(crm, "ada.l")
        guard case .transaction(.applied) = again else {
            Issue.record("a destroyed user's name stayed taken")
            return
        }
        #expect(try crm.check() == [])
    }

    @Test func usersAreNotRecordsOfTheRecordsAPIOrTargets() throws {
        #expect(EntityCode(name: "user") == nil)
        #expect(!EntityCode.records.contains(.user))
        let crm = try TestCRM()
        let (user, _) = try createUser(crm, "grace")
        #expect(throws: RecordError.self) {
            try crm.create(
                .activity, ["kind": .text("note"), "targets": .targets([RecordRef(entity: .user, id: user)])])
        }
    }
}
