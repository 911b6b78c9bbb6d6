import CRM

/// A user's rights through an application: the union of the user's roles, limited by the
/// application's ceiling (the union of its roles), deny by default. Each decision can explain
/// itself, naming the role (or the missing grant) that decided.
public struct Access: Sendable {
    public let roles: [CRMRole]
    /// The application's roles (nil: an application without a ceiling, such as an operator's
    /// own tool; never for integrations).
    public let ceiling: [CRMRole]?

    public init(roles: [CRMRole], ceiling: [CRMRole]?) {
        self.roles = roles
        self.ceiling = ceiling
    }

    /// A decision and why.
    public struct Decision<Value: Equatable & Sendable>: Equatable, Sendable {
        public var value: Value
        public var reason: String
    }

    public func scope(_ action: ObjectAction, on entity: EntityCode) -> Scope { explainScope(action, on: entity).value }

    public func explainScope(_ action: ObjectAction, on entity: EntityCode) -> Decision<Scope> {
        let granted = Self.widest(roles) { $0.objects[entity]?[action] ?? .none }
        guard granted.value != .none else {
            return Decision(
                value: .none, reason: "no role grants \(action.rawValue) on \(entity.name) (denied by default)")
        }
        let reason = "role `\(granted.role!)` grants \(action.rawValue): \(granted.value.rawValue) on \(entity.name)"
        guard let ceiling else { return Decision(value: granted.value, reason: reason) }
        let limit = Self.widest(ceiling) { $0.objects[entity]?[action] ?? .none }
        guard limit.value < granted.value else { return Decision(value: granted.value, reason: reason) }
        return Decision(
            value: limit.value,
            reason: reason + "; the application's ceiling allows \(limit.value.rawValue)"
                + (limit.role.map { " (role `\($0)`)" } ?? ""))
    }

    public func fieldAccess(_ field: FieldDefinition, on entity: EntityCode) -> FieldAccess {
        explainField(field, on: entity).value
    }

    /// A named rule decides; else a personal field is hidden, and any other follows the object
    /// actions (edit with create or update, read with read).
    public func explainField(_ field: FieldDefinition, on entity: EntityCode) -> Decision<FieldAccess> {
        let granted = Self.widest(roles) { Self.access(field, entity, in: $0) }
        let reason: String
        if let role = granted.role {
            let named = roles.first { $0.name == role }?.fields[entity]?[field.name] != nil
            reason =
                named
                ? "role `\(role)` names \(field.name): \(granted.value.rawValue)"
                : "\(field.name) follows the object actions of role `\(role)`: \(granted.value.rawValue)"
        } else {
            reason =
                field.personal
                ? "\(field.name) is personal data and no role names it (none by default)"
                : "no role reads \(entity.name) (denied by default)"
        }
        guard let ceiling else { return Decision(value: granted.value, reason: reason) }
        let limit = Self.widest(ceiling) { Self.access(field, entity, in: $0) }
        guard limit.value < granted.value else { return Decision(value: granted.value, reason: reason) }
        return Decision(
            value: limit.value, reason: reason + "; the application's ceiling allows \(limit.value.rawValue)")
    }

    public var permissions: Set<Permission> {
        let mine = roles.reduce(into: Set<Permission>()) { $0.formUnion($1.permissions) }
        guard let ceiling else { return mine }
        return mine.intersection(ceiling.reduce(into: Set<Permission>()) { $0.formUnion($1.permissions) })
    }

    /// Every role's conditions, the ceiling's included, at once.
    public var conditions: RoleConditions {
        (roles + (ceiling ?? [])).reduce(RoleConditions()) { $0.intersected(with: $1.conditions) }
    }

    /// Whether a record owned by `owner` with `teams` is within `scope` for `user` in `userTeams`.
    public static func inScope(
        _ scope: Scope, owner: String, teams: [CRMID], user: String, userTeams: Set<CRMID>
    ) -> Bool {
        switch scope {
        case .none: return false
        case .own: return owner == user
        case .team: return owner == user || teams.contains(where: userTeams.contains)
        case .all: return true
        }
    }

    static func access(_ field: FieldDefinition, _ entity: EntityCode, in role: CRMRole) -> FieldAccess {
        if let named = role.fields[entity]?[field.name] { return named }
        if field.personal { return .none }
        let objects = role.objects[entity] ?? [:]
        if (objects[.update] ?? .none) != .none || (objects[.create] ?? .none) != .none { return .edit }
        return (objects[.read] ?? .none) != .none ? .read : .none
    }

    /// The widest value any of `roles` gives, and the first role that gives it (nil: none).
    private static func widest<Value: Comparable & CaseIterable>(
        _ roles: [CRMRole], _ value: (CRMRole) -> Value
    ) -> (value: Value, role: String?) where Value.AllCases.Element == Value {
        var best = Value.allCases.first!
        var by: String?
        for role in roles {
            let given = value(role)
            if given > best {
                best = given
                by = role.name
            }
        }
        return (best, by)
    }
}
