import CRM
import Foundation

/// How far an object action reaches: no records, the user's own, their teams', or all.
public enum Scope: String, Comparable, CaseIterable, Sendable {
    case none, own, team, all

    private var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: Scope, b: Scope) -> Bool { a.rank < b.rank }
}

public enum ObjectAction: String, CaseIterable, Sendable {
    case create, read, update, delete, destroy
}

/// What a role lets a user do with one field.
public enum FieldAccess: String, Comparable, CaseIterable, Sendable {
    case none, read, edit

    private var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: FieldAccess, b: FieldAccess) -> Bool { a.rank < b.rank }
}

/// Rights beyond records.
public enum Permission: String, CaseIterable, Sendable {
    case export
    case privacyErase = "privacy.erase"
    case privacyApprove = "privacy.approve"
    case restrictedRead = "restricted.read"
    case historyRead = "history.read"
    case auditRead = "audit.read"
    case auditPrune = "audit.prune"
    case userAdmin = "user.admin"
    case roleAdmin = "role.admin"
    case analyticsExport = "analytics.export"
    case backupDrill = "backup.drill"
}

/// A role: object actions with scopes, field rules, permissions and the conditions under which
/// it may be used. Anything not granted is denied; personal fields a role does not name are
/// hidden even where the object may be read.
public struct CRMRole: Equatable, Sendable {
    public var name: String
    public var objects: [EntityCode: [ObjectAction: Scope]] = [:]
    public var fields: [EntityCode: [String: FieldAccess]] = [:]
    public var permissions: Set<Permission> = []
    public var conditions = RoleConditions()

    public init(name: String) { self.name = name }

    public static let maxNameBytes = 64

    /// The role described by `yaml`, its fields checked against `definition` (each entity's
    /// fields, custom ones included).
    ///
    ///     name: sales-rep
    ///     objects: {person: {create: true, read: team, update: own}, deal: {read: all}}
    ///     fields: {person: {emails: edit, phones: read}}
    ///     permissions: [export]
    ///     conditions: {mfa: required, ip_ranges: [10.0.0.0/8], hours: "Mon-Fri 07:00-20:00 Europe/Paris"}
    public static func parse(
        yaml: String, definition: (EntityCode) -> EntityDefinition = EntityCatalog.standard
    ) throws -> CRMRole {
        guard yaml.utf8.count <= 64 << 10 else { throw RoleError("a role is at most 64 KiB of YAML") }
        let document = try YAMLTree.parse(yaml)
        let root = try document.mapping(
            "the role", allowed: ["name", "objects", "fields", "permissions", "conditions"])
        guard let name = try root["name"]?.scalar("name"), Self.isName(name) else {
            throw RoleError("`name` is 1 to \(maxNameBytes) characters: a-z, 0-9, '-' and '_', a letter first")
        }
        var role = CRMRole(name: name)
        for (entityName, actions) in try root["objects"]?.mapping("objects") ?? [:] {
            let entity = try Self.entity(entityName, "objects")
            for (actionName, value) in try actions.mapping("objects.\(entityName)") {
                guard let action = ObjectAction(rawValue: actionName) else {
                    throw RoleError(
                        "objects.\(entityName): `\(actionName)` is not create, read, update, delete or destroy")
                }
                role.objects[entity, default: [:]][action] = try Self.scope(value, action, "objects.\(entityName)")
            }
        }
        for (entityName, rules) in try root["fields"]?.mapping("fields") ?? [:] {
            let entity = try Self.entity(entityName, "fields")
            let known = definition(entity)
            for (fieldName, value) in try rules.mapping("fields.\(entityName)") {
                guard known.field(named: fieldName) != nil else {
                    throw RoleError("fields.\(entityName): \(entity.name) has no field `\(fieldName.prefix(64))`")
                }
                let text = try value.scalar("fields.\(entityName).\(fieldName)")
                guard let access = FieldAccess(rawValue: text) else {
                    throw RoleError("fields.\(entityName).\(fieldName) is none, read or edit")
                }
                role.fields[entity, default: [:]][fieldName] = access
            }
        }
        for item in try root["permissions"]?.sequence("permissions") ?? [] {
            let text = try item.scalar("permissions")
            guard let permission = Permission(rawValue: text) else {
                throw RoleError(
                    "permissions: `\(text.prefix(64))` is not one of "
                        + Permission.allCases.map(\.rawValue).joined(separator: ", "))
            }
            role.permissions.insert(permission)
        }
        if let conditions = root["conditions"] { role.conditions = try RoleConditions.parse(conditions) }
        return role
    }

    public static func isName(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard (1...maxNameBytes).contains(bytes.count), (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[0])
        else { return false }
        return bytes.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }

    private static func entity(_ name: String, _ place: String) throws -> EntityCode {
        guard let entity = EntityCode(name: name) else {
            throw RoleError(
                "\(place): `\(name.prefix(64))` is not an entity (\(EntityCode.records.map(\.name).joined(separator: ", ")))"
            )
        }
        return entity
    }

    /// `create` takes true or false; the other actions a scope.
    private static func scope(_ value: YAMLTree, _ action: ObjectAction, _ place: String) throws -> Scope {
        let text = try value.scalar("\(place).\(action.rawValue)")
        if action == .create {
            switch text {
            case "true": return .all
            case "false": return .none
            default: throw RoleError("\(place).create is true or false")
            }
        }
        guard let scope = Scope(rawValue: text) else {
            throw RoleError("\(place).\(action.rawValue) is none, own, team or all")
        }
        return scope
    }
}

public struct RoleError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
