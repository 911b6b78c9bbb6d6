import CRM
import Foundation
import KVStore
import Testing

@testable import Identity

@Suite struct DirectoryTests {
    private let password = "correct horse battery staple"

    private func message(_ body: () throws -> Any) -> String? {
        do {
            _ = try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func principalsAreCheckedBlockedExpiredAndTouchedHourly() throws {
        let test = try TestDirectory()
        let principals = PrincipalChanges(records: test.records)
        #expect(throws: PrincipalRefusal.unknown) { try principals.check("app", now: test.clock) }
        var app = Principal(name: "app", ceiling: ["sales-rep", "analyst"])
        app.mayAssertAddress = true
        app.expiresAtMillis = test.clock + 86_400_000
        try test.applied(try principals.put(app, replacing: nil))
        guard case .transaction(.conditionFailed) = try test.apply(try principals.put(app, replacing: nil)) else {
            Issue.record("a second add of the same principal applied")
            return
        }
        let found = try principals.check("app", now: test.clock)
        #expect(found.principal.ceiling == ["sales-rep", "analyst"] && found.principal.mayAssertAddress)
        try test.applied(try #require(try principals.touch(found, now: test.clock)))
        let touched = try principals.check("app", now: test.clock)
        #expect(try principals.touch(touched, now: test.clock + 60_000) == nil, "within the hour")
        #expect(throws: PrincipalRefusal.expired) { try principals.check("app", now: test.clock + 86_400_000) }
        var blocked = touched.principal
        blocked.blocked = true
        try test.applied(try principals.put(blocked, replacing: touched.version))
        #expect(throws: PrincipalRefusal.blocked) { try principals.check("app", now: test.clock) }
        #expect(try principals.list().map(\.name) == ["app"])
        #expect(message { try principals.put(Principal(name: "bad name", ceiling: []), replacing: nil) } != nil)
        #expect(message { try principals.put(Principal(name: "x", ceiling: ["Not A CRMRole"]), replacing: nil) } != nil)
    }

    @Test func rolesAreStoredAssignedAndKeptWithinTheSeparationOfDuties() async throws {
        let test = try TestDirectory()
        let store = RoleStore(directory: test.directory)
        for name in ["security-admin", "privacy-officer", "sales-rep", "analyst"] {
            try test.applied(try store.put(yaml: RoleTemplates.yaml[name]!))
        }
        #expect(try store.names() == ["analyst", "privacy-officer", "sales-rep", "security-admin"])
        #expect(message { try store.put(yaml: "name: r\nobjects: {planet: {read: all}}") }?.contains("entity") == true)
        let ada = try await test.createUser("ada", password: password)
        let admin = "crm://user/" + (try CRMID.random()).description

        // Assigning raises the authorization epoch: the user's sessions end.
        let token = try await test.signIn("ada", password)
        try test.applied(try store.assign(["sales-rep", "analyst"], to: ada, by: admin))
        #expect(throws: SessionRefusal.revoked) { try test.check(token) }
        let record = try #require(try test.records.read(.user, ada))
        #expect(try test.records.open(record.record, fields: ["roles"])["roles"] == .texts(["sales-rep", "analyst"]))

        // Refused: one's own roles, an unknown role, a breach of the separation of duties.
        #expect(
            message { try store.assign(["analyst"], to: ada, by: DirectoryChanges.owner(of: ada)) }?.contains(
                "own roles") == true)
        #expect(message { try store.assign(["root"], to: ada, by: admin) }?.contains("no role `root`") == true)
        let breach = message { try store.assign(["security-admin", "privacy-officer"], to: ada, by: admin) }
        #expect(breach?.contains("user \(ada)") == true && breach?.contains("personal data") == true, "\(breach ?? "")")

        // A role edit that would put a holder in breach is refused naming the user.
        let edited = message {
            try store.put(
                yaml:
                    "name: analyst\nobjects: {person: {read: all}}\npermissions: [user.admin]\nfields: {person: {emails: read}}"
            )
        }
        #expect(
            edited?.contains("\(ada)") == true && edited?.contains("separation of duties") == true, "\(edited ?? "")")
        // A held role cannot be deleted; an unheld one can.
        #expect(message { try store.delete("analyst") }?.contains("users hold role") == true)
        try test.applied(try store.delete("privacy-officer"))
        #expect(try store.role("privacy-officer") == nil)

        // The user's access: roles from the store, within an application's ceiling.
        let access = Access(roles: try store.roles(["sales-rep", "analyst", "gone"]), ceiling: nil)
        #expect(access.scope(.read, on: .person) == .all && access.permissions == [.analyticsExport])
    }

    @Test func teamsAreNamedOnceRetiredAndJoinedWithTheMembersSessionsEnding() async throws {
        let test = try TestDirectory()
        let teams = TeamStore(directory: test.directory)
        let east = try CRMID.random()
        try test.applied(try teams.create(id: east, name: "east"))
        let west = try CRMID.random()
        try test.applied(try teams.create(id: west, name: "west"))
        // A name is one team's, whoever proposes it first; names follow the role-name rule.
        #expect(
            message { try teams.create(id: try CRMID.random(), name: "east") } == "there is already a team called east")
        let racing = try teams.create(id: try CRMID.random(), name: "south")
        try test.applied(try teams.create(id: try CRMID.random(), name: "south"))
        guard case .transaction(.conditionFailed) = try test.apply(racing) else {
            Issue.record("a second team called south was made")
            return
        }
        #expect(message { try teams.create(id: try CRMID.random(), name: "East Coast") }?.contains("a-z") == true)
        #expect(try teams.all().map(\.name).sorted() == ["east", "south", "west"])
        #expect(try teams.team(named: "west")?.id == west)

        // Joining raises the authorization epoch: the user's sessions end. Nobody changes their own.
        let ada = try await test.createUser("ada", password: password)
        let admin = "crm://user/" + (try CRMID.random()).description
        let token = try await test.signIn("ada", password)
        try test.applied(try teams.assign([east], to: ada, by: admin))
        #expect(throws: SessionRefusal.revoked) { try test.check(token) }
        #expect(try test.records.read(.user, ada)?.record.teams == [east])
        #expect(
            message { try teams.assign([west], to: ada, by: DirectoryChanges.owner(of: ada)) }?.contains("own teams")
                == true)
        let unknown = try CRMID.random()
        #expect(message { try teams.assign([unknown], to: ada, by: admin) } == "there is no team \(unknown)")
        #expect(message { try teams.assign([east, east], to: ada, by: admin) }?.contains("twice") == true)
        let many = try (0...CRMLimits.teams).map { _ in try CRMID.random() }
        #expect(message { try teams.assign(many, to: ada, by: admin) }?.contains("at most") == true)

        // Renamed: the old name is free again. Retired: nobody joins, members stay.
        let current = try #require(try teams.team(east))
        try test.applied(try teams.change(current, name: "north-east", retired: true))
        #expect(try teams.team(named: "east") == nil && teams.team(named: "north-east")?.retired == true)
        #expect(message { try teams.assign([east], to: ada, by: admin) }?.contains("retired") == true)
        #expect(try test.records.read(.user, ada)?.record.teams == [east])
        // A stale change (read before the rename) does not apply.
        guard
            case .transaction(.conditionFailed) = try test.apply(
                try teams.change(current, name: "east", retired: false))
        else {
            Issue.record("a change read at an old version applied")
            return
        }
        // A membership taken while the team was joinable fails once it is retired.
        let pins = try teams.joinable([west])
        try test.applied(try teams.change(try #require(try teams.team(west)), name: "west", retired: true))
        var joining = try teams.assign([], to: ada, by: admin)
        joining.conditions += pins
        guard case .transaction(.conditionFailed) = try test.apply(joining) else {
            Issue.record("a membership pinned to a team retired meanwhile applied")
            return
        }
        #expect(try CRMCheck(kv: test.state.kv).run().problems.isEmpty)
    }

    @Test func crmCheckNamesARecordInATeamThatDoesNotExist() async throws {
        let test = try TestDirectory()
        let ghost = try CRMID.random()
        try test.applied(
            try test.records.create(
                .deal, id: try CRMID.random(), fields: ["name": .text("Q3")], owner: "crm://user/x", teams: [ghost],
                principal: "crm://user/x", now: test.clock))
        #expect(try CRMCheck(kv: test.state.kv).run().problems.contains { $0.contains("team \(ghost)") })
    }
}
