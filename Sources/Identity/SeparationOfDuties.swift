import CRM

/// Rights no one may hold together, checked whenever roles are assigned or edited: whoever
/// administers users or roles reads no personal data; whoever may prune the audit trail neither
/// reads nor writes records, exports, nor administers users or roles; and nobody changes their
/// own roles or teams.
public enum SeparationOfDuties {
    /// The rules that holding all of `roles` at once breaks (empty: none), each a sentence.
    public static func violations(
        of roles: [CRMRole], definition: (EntityCode) -> EntityDefinition = EntityCatalog.standard
    ) -> [String] {
        let access = Access(roles: roles, ceiling: nil)
        let permissions = access.permissions
        var problems: [String] = []
        if !permissions.isDisjoint(with: [.userAdmin, .roleAdmin]) {
            let personal = EntityCode.records.flatMap { entity in
                definition(entity).fieldsInUse.filter {
                    $0.personal && access.scope(.read, on: entity) != .none
                        && access.fieldAccess($0, on: entity) != .none
                }.map { "\(entity.name).\($0.name)" }
            }
            if !personal.isEmpty {
                problems.append(
                    "user and role administrators may not read personal data (\(personal.prefix(3).joined(separator: ", "))"
                        + (personal.count > 3 ? ", …" : "") + ")")
            }
        }
        if permissions.contains(.auditPrune) {
            let records = EntityCode.records.flatMap { entity in
                ObjectAction.allCases.filter { access.scope($0, on: entity) != .none }.map {
                    "\($0.rawValue) \(entity.name)"
                }
            }
            if !records.isEmpty {
                problems.append(
                    "whoever may prune the audit trail may not read or write records (\(records.prefix(3).joined(separator: ", ")))"
                )
            }
            let others = permissions.intersection([.export, .userAdmin, .roleAdmin, .analyticsExport])
            if !others.isEmpty {
                problems.append(
                    "whoever may prune the audit trail may not also hold "
                        + others.map(\.rawValue).sorted().joined(separator: ", "))
            }
        }
        return problems
    }

    /// Why `actor` may not change the roles of `user` (nil: they may).
    public static func refusalToChangeRoles(actor: String, of user: String) -> String? {
        actor == user ? "nobody changes their own roles" : nil
    }

    /// Why `actor` may not change the teams of `user` (nil: they may).
    public static func refusalToChangeTeams(actor: String, of user: String) -> String? {
        actor == user ? "nobody changes their own teams" : nil
    }
}
