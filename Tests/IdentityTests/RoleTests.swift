import CRM
import Foundation
import Testing

@testable import Identity

@Suite struct RoleTests {
    private func refusal(_ yaml: String) -> String? {
        do {
            _ = try CRMRole.parse(yaml: yaml)
            return nil
        } catch {
            return "\(error)"
        }
    }

    private func field(_ entity: EntityCode, _ name: String) -> FieldDefinition {
        EntityCatalog.standard(entity).field(named: name)!
    }

    @Test func aRoleParsesStrictlyWithErrorsThatSayWhere() throws {
        let role = try CRMRole.parse(
            yaml: """
                name: sales-rep
                objects: {person: {create: true, read: team, update: own}, deal: {read: all, delete: none}}
                fields: {person: {emails: edit, phones: read}}
                permissions: [export]
                conditions: {mfa: required, ip_ranges: [10.0.0.0/8, "2001:db8::/32"], hours: "Mon-Fri 07:00-20:00 Asia/Shanghai"}
                """)
        #expect(role.name == "sales-rep")
        #expect(role.objects[.person] == [.create: .all, .read: .team, .update: .own])
        #expect(role.objects[.deal] == [.read: .all, .delete: Scope.none])
        #expect(role.fields[.person] == ["emails": .edit, "phones": .read])
        #expect(role.permissions == [.export])
        #expect(role.conditions.mfaRequired && role.conditions.ipRangeLists.first?.count == 2)
        #expect(role.conditions.hourWindows.count == 1)

        let cases: [(String, String)] = [
            ("name: Bad Name", "`name` is 1 to 64"), ("objects: {}", "`name`"),
            ("name: r\nobjects: {planet: {read: all}}", "not an entity"),
            ("name: r\nobjects: {person: {read: most}}", "objects.person.read is none, own, team or all"),
            ("name: r\nobjects: {person: {create: team}}", "objects.person.create is true or false"),
            ("name: r\nobjects: {person: {fly: all}}", "is not create, read"),
            ("name: r\nfields: {person: {nope: read}}", "person has no field `nope`"),
            ("name: r\nfields: {person: {emails: write}}", "none, read or edit"),
            ("name: r\npermissions: [root]", "is not one of"), ("name: r\nowner: me", "`owner` is not one of"),
            ("name: r\nname: s", "appears twice"), ("name: r\nconditions: {ip_ranges: [10.0.0.0/33]}", "address range"),
            ("name: r\nconditions: {ip_ranges: []}", "allows nothing"),
            ("name: r\nconditions: {hours: \"Mon-Fri 7-20 Mars/Base\"}", "conditions.hours"),
            ("name: r\nconditions: {mfa: maybe}", "required or optional"), ("[1, 2", "not valid YAML"),
            ("- a\n- b", "must be a mapping"), (String(repeating: "x", count: 70_000), "64 KiB"),
        ]
        for (yaml, expected) in cases {
            let refused = refusal(yaml)
            #expect(refused?.contains(expected) == true, "\(yaml.prefix(60)): \(refused ?? "accepted")")
        }
    }

    @Test func rolesMergeByUnionWithinTheCeilingAndPersonalFieldsAreHiddenByDefault() throws {
        let rep = try RoleTemplates.role("sales-rep")
        let analyst = try RoleTemplates.role("analyst")
        let both = Access(roles: [rep, analyst], ceiling: nil)
        #expect(both.scope(.read, on: .person) == .all, "analyst's all wins over the rep's team")
        #expect(both.scope(.update, on: .person) == .own)
        #expect(both.explainScope(.read, on: .person).reason.contains("role `analyst` grants read: all"))
        #expect(both.permissions == [.analyticsExport])
        #expect(both.fieldAccess(field(.person, "emails"), on: .person) == .edit, "named by the rep's role")
        #expect(both.fieldAccess(field(.person, "city"), on: .person) == .none, "personal, named by no role")
        #expect(both.explainField(field(.person, "city"), on: .person).reason.contains("none by default"))
        #expect(both.fieldAccess(field(.person, "source"), on: .person) == .edit, "not personal: follows update")
        #expect(Access(roles: [analyst], ceiling: nil).fieldAccess(field(.person, "source"), on: .person) == .read)

        // Through an integration whose ceiling reads only: the union is cut down to it.
        let readonly = try RoleTemplates.role("integration-readonly")
        let through = Access(roles: [rep, analyst], ceiling: [readonly])
        #expect(through.scope(.read, on: .person) == .all)
        #expect(through.scope(.update, on: .person) == .none)
        #expect(through.explainScope(.update, on: .person).reason.contains("ceiling allows none"))
        #expect(
            through.fieldAccess(field(.person, "emails"), on: .person) == .none, "the ceiling names no personal field")
        #expect(through.permissions.isEmpty)

        // No role: everything denied.
        let nobody = Access(roles: [], ceiling: nil)
        for entity in EntityCode.allCases {
            for action in ObjectAction.allCases { #expect(nobody.scope(action, on: entity) == .none) }
            for field in EntityCatalog.standard(entity).fields {
                #expect(nobody.fieldAccess(field, on: entity) == .none)
            }
        }
        #expect(nobody.permissions.isEmpty)
    }

    /// Every template × entity × action, each cell asserted.
    @Test func theTemplatesGrantExactlyTheirMatrix() throws {
        // c r u d x: create, read, update, delete, destroy; - none, o own, t team, a all.
        let matrix: [String: [EntityCode: String]] = [
            "security-admin": [.person: "-----", .company: "-----", .deal: "-----", .activity: "-----"],
            "auditor": [.person: "-----", .company: "-----", .deal: "-----", .activity: "-----"],
            "privacy-officer": [.person: "-a---", .company: "-a---", .deal: "-a---", .activity: "-a---"],
            "sales-manager": [.person: "aatt-", .company: "aatt-", .deal: "aatt-", .activity: "attt-"],
            "sales-rep": [.person: "atoo-", .company: "aao--", .deal: "atoo-", .activity: "aooo-"],
            "analyst": [.person: "-a---", .company: "-a---", .deal: "-a---", .activity: "-----"],
            "integration-readonly": [.person: "-a---", .company: "-a---", .deal: "-a---", .activity: "-a---"],
        ]
        let letters: [Character: Scope] = ["-": .none, "o": .own, "t": .team, "a": .all]
        var cells = 0
        #expect(Set(matrix.keys) == Set(RoleTemplates.yaml.keys))
        for (name, rows) in matrix {
            let access = Access(roles: [try RoleTemplates.role(name)], ceiling: nil)
            for entity in EntityCode.records {
                let expected = Array(rows[entity]!)
                for (index, action) in ObjectAction.allCases.enumerated() {
                    #expect(access.scope(action, on: entity) == letters[expected[index]], "\(name) \(action) \(entity)")
                    cells += 1
                }
            }
            #expect(SeparationOfDuties.violations(of: access.roles).isEmpty, "\(name) within the separation of duties")
        }
        #expect(cells == 140)
    }

    @Test func scopesOwnTeamAndAll() throws {
        let team = try CRMID.random()
        let other = try CRMID.random()
        func inScope(_ scope: Scope, owner: String, teams: [CRMID]) -> Bool {
            Access.inScope(scope, owner: owner, teams: teams, user: "u:ada", userTeams: [team])
        }
        #expect(!inScope(.none, owner: "u:ada", teams: [team]))
        #expect(inScope(.own, owner: "u:ada", teams: []) && !inScope(.own, owner: "u:bob", teams: [team]))
        #expect(
            inScope(.team, owner: "u:bob", teams: [other, team]) && !inScope(.team, owner: "u:bob", teams: [other]))
        #expect(inScope(.team, owner: "u:ada", teams: []), "one's own records are within one's team scope")
        #expect(inScope(.all, owner: "u:bob", teams: []))
    }

    @Test func conditionsOfEveryRoleHoldAtOnce() throws {
        let office = try CRMRole.parse(
            yaml:
                "name: office\nconditions: {ip_ranges: [10.1.0.0/16, \"fd00::/8\"], hours: \"Mon-Fri 09:00-18:00 Europe/Paris\"}"
        )
        let night = try CRMRole.parse(
            yaml: "name: night\nconditions: {mfa: required, hours: \"Sat-Sun 22:00-06:00 UTC\"}")
        // 2026-12-07 is a Monday; 10:00 in Paris is 09:00 UTC.
        let mondayMorning = Date(timeIntervalSince1970: 1_796_634_000)
        let conditions = Access(roles: [office], ceiling: nil).conditions
        #expect(conditions.refusal(address: "10.1.2.3", at: mondayMorning, mfa: false) == nil)
        #expect(conditions.refusal(address: "fd12::1", at: mondayMorning, mfa: false) == nil)
        #expect(conditions.refusal(address: "10.2.0.1", at: mondayMorning, mfa: false)?.contains("address") == true)
        #expect(conditions.refusal(address: nil, at: mondayMorning, mfa: false)?.contains("address") == true)
        #expect(conditions.refusal(address: "garbage", at: mondayMorning, mfa: false) != nil)
        let mondayEvening = mondayMorning.addingTimeInterval(10 * 3600)
        #expect(conditions.refusal(address: "10.1.2.3", at: mondayEvening, mfa: false)?.contains("hours") == true)
        // Both roles: every condition at once (a second factor, and hours no time satisfies both).
        let both = Access(roles: [office, night], ceiling: nil).conditions
        #expect(both.refusal(address: "10.1.2.3", at: mondayMorning, mfa: false)?.contains("second factor") == true)
        #expect(both.refusal(address: "10.1.2.3", at: mondayMorning, mfa: true)?.contains("hours") == true)
        // Past midnight: Saturday 23:00 and Sunday-into-Monday 03:00 UTC are in; Monday 07:00 is not.
        let nightOnly = Access(roles: [night], ceiling: nil).conditions
        let saturdayLate = mondayMorning.addingTimeInterval(-(2 * 86400) + 14 * 3600)
        #expect(nightOnly.refusal(address: nil, at: saturdayLate, mfa: true) == nil)
        #expect(nightOnly.refusal(address: nil, at: mondayMorning.addingTimeInterval(-6 * 3600), mfa: true) == nil)
        #expect(nightOnly.refusal(address: nil, at: mondayMorning.addingTimeInterval(-2 * 3600), mfa: true) != nil)
    }

    @Test func theSeparationOfDutiesIsEnforcedOnTheRolesHeldTogether() throws {
        let admin = try RoleTemplates.role("security-admin")
        let privacy = try RoleTemplates.role("privacy-officer")
        let problems = SeparationOfDuties.violations(of: [admin, privacy])
        #expect(problems.count == 1 && problems[0].contains("may not read personal data"), "\(problems)")
        #expect(problems[0].contains("person.first_name"))
        // An administrator may read records without personal fields.
        let analyst = try RoleTemplates.role("analyst")
        #expect(SeparationOfDuties.violations(of: [admin, analyst]).isEmpty)
        let pruner = try CRMRole.parse(yaml: "name: pruner\npermissions: [audit.prune, audit.read]")
        #expect(SeparationOfDuties.violations(of: [pruner]).isEmpty)
        let withRecords = SeparationOfDuties.violations(of: [pruner, analyst])
        #expect(withRecords.contains { $0.contains("may not read or write records") }, "\(withRecords)")
        #expect(withRecords.contains { $0.contains("analytics.export") })
        #expect(SeparationOfDuties.violations(of: [pruner, admin]).contains { $0.contains("role.admin, user.admin") })
        #expect(SeparationOfDuties.refusalToChangeRoles(actor: "u:ada", of: "u:ada") != nil)
        #expect(SeparationOfDuties.refusalToChangeRoles(actor: "u:ada", of: "u:bob") == nil)
    }
}
