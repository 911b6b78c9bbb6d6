import CRM
import KVStore
import Synchronization

/// Roles as replicated configuration (`c/<workspace>/role/<name>`, their YAML), and the
/// assignment of roles to users. Both keep the separation of duties: a role edit is refused
/// naming each user it would put in breach, an assignment naming the user, and nobody assigns
/// their own roles. An assignment raises the user's authorization epoch, so their sessions end.
public struct RoleStore: Sendable {
    public let directory: DirectoryChanges
    /// Users checked when a role changes (a directory larger than this is refused, not half-checked).
    public static let maxUsersChecked = 10_000

    public init(directory: DirectoryChanges) { self.directory = directory }

    var records: RecordChanges { directory.records }

    public func key(_ name: String) -> [UInt8] {
        CRMLayout.workspaceKey(records.workspace, "/role/") + Array(name.utf8)
    }

    /// Role `name` as stored, with its version (nil: none).
    public func role(_ name: String) throws -> (role: CRMRole, version: UInt64)? {
        guard CRMRole.isName(name), let value = try records.kv.crmValue(key(name)) else { return nil }
        guard let version = value.version,
            let role = try? CRMRole.parse(yaml: String(decoding: value.payload, as: UTF8.self), definition: definition)
        else { throw RecordError.keys(.doesNotOpen("role \(name)")) }
        return (role, version)
    }

    /// Role `name`'s YAML as stored (nil: none).
    public func yaml(_ name: String) throws -> String? {
        guard CRMRole.isName(name), let value = try records.kv.crmValue(key(name)) else { return nil }
        return String(decoding: value.payload, as: UTF8.self)
    }

    /// The roles of `names` that exist (a name without a role grants nothing).
    public func roles(_ names: [String]) throws -> [CRMRole] { try names.compactMap { try role($0)?.role } }

    /// The roles of `names` that exist, each with the key and version it was read at; parsed
    /// once per version through `cache` (a role's YAML is parsed on every call otherwise).
    public func held(_ names: [String], cache: RoleCache) throws -> [HeldRole] {
        try names.compactMap { name in
            guard CRMRole.isName(name), let value = try records.kv.crmValue(key(name)) else { return nil }
            guard let version = value.version else { throw RecordError.keys(.doesNotOpen("role \(name)")) }
            if let cached = cache.role(name, version: version) { return cached }
            guard
                let role = try? CRMRole.parse(
                    yaml: String(decoding: value.payload, as: UTF8.self), definition: definition)
            else { throw RecordError.keys(.doesNotOpen("role \(name)")) }
            let held = HeldRole(role: role, key: key(name), version: version)
            cache.keep(held)
            return held
        }
    }

    public func names(limit: Int = 1000) throws -> [String] {
        let prefix = CRMLayout.workspaceKey(records.workspace, "/role/")
        return try records.kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: limit).entries.map {
            String(decoding: $0.key.dropFirst(prefix.count), as: UTF8.self)
        }
    }

    /// Adds or replaces the role `yaml` describes, refused when any user holding it would break
    /// the separation of duties with their other roles.
    public func put(yaml: String) throws -> Transaction {
        let role = try parse(yaml)
        let current = try self.role(role.name)
        var breaches: [String] = []
        for (user, names) in try usersAndRoles() where names.contains(role.name) {
            let held = try roles(names.filter { $0 != role.name }) + [role]
            if let problem = SeparationOfDuties.violations(of: held, definition: definition).first {
                breaches.append("\(user): \(problem)")
            }
        }
        guard breaches.isEmpty else {
            throw RecordError.badRequest(
                "the role would break the separation of duties for user "
                    + breaches.prefix(5).joined(separator: "; ") + (breaches.count > 5 ? "; …" : ""))
        }
        let key = key(role.name)
        return Transaction(
            conditions: [current.map { .version(key: key, $0.version) } ?? .absent(key: key)],
            operations: [.putStamped(key: key, value: Array(yaml.utf8))])
    }

    /// The role `yaml` describes, its fields checked against the entities' current definitions
    /// (custom fields included).
    public func parse(_ yaml: String) throws -> CRMRole {
        do { return try CRMRole.parse(yaml: yaml, definition: definition) } catch let error as RoleError {
            throw RecordError.badRequest(error.description)
        }
    }

    /// Removes role `name`, refused while a user holds it.
    public func delete(_ name: String) throws -> Transaction {
        guard let current = try role(name) else {
            throw RecordError.badRequest("there is no role `\(name.prefix(64))`")
        }
        let holders = try usersAndRoles().filter { $0.roles.contains(name) }.map(\.user)
        guard holders.isEmpty else {
            throw RecordError.badRequest(
                "users hold role `\(name)`: " + holders.prefix(5).map(\.description).joined(separator: ", "))
        }
        return Transaction(
            conditions: [.version(key: key(name), current.version)], operations: [.delete(key: key(name))])
    }

    /// Gives `user` exactly `names` (each an existing role), by `actor` (a user id, or an
    /// operator's identity), raising the user's authorization epoch in the same transaction.
    public func assign(_ names: [String], to user: CRMID, by actor: String) throws -> Transaction {
        if let refusal = SeparationOfDuties.refusalToChangeRoles(actor: actor, of: DirectoryChanges.owner(of: user)) {
            throw RecordError.badRequest(refusal)
        }
        guard names.count <= 20 else { throw RecordError.badRequest("a user holds at most 20 roles") }
        let held = try names.map { name in
            guard let found = try role(name) else {
                throw RecordError.badRequest("there is no role `\(name.prefix(64))`")
            }
            return found
        }
        if let problem = SeparationOfDuties.violations(of: held.map(\.role), definition: definition).first {
            throw RecordError.badRequest("user \(user) would break the separation of duties: \(problem)")
        }
        guard let record = try records.read(.user, user), let credentials = try directory.credentials(of: user) else {
            throw RecordError.notFound(.user, user)
        }
        var transaction = try records.update(record, set: ["roles": .texts(names)], clear: [])
        transaction.conditions += held.map { .version(key: key($0.role.name), $0.version) }
        let raise = directory.raiseAuthzEpoch(of: user, from: credentials)
        transaction.conditions += raise.conditions
        transaction.operations += raise.operations
        return transaction
    }

    /// Every user's id and role names (roles are not personal: read without unsealing).
    func usersAndRoles() throws -> [(user: CRMID, roles: [String])] {
        var result: [(CRMID, [String])] = []
        var after: [UInt8]?
        while true {
            let page = try records.list(ListQuery(entity: .user, includeDeleted: true, pageSize: 500), after: after)
            for user in page.records {
                guard case .texts(let names)? = try records.open(user.record, fields: ["roles"])["roles"] else {
                    result.append((user.record.id, []))
                    continue
                }
                result.append((user.record.id, names))
            }
            guard result.count <= Self.maxUsersChecked else {
                throw RecordError.tooLarge("more than \(Self.maxUsersChecked) users to check")
            }
            guard let next = page.resumeAfter else { return result }
            after = next
        }
    }

    private var definition: @Sendable (EntityCode) -> EntityDefinition {
        let records = self.records
        return { (try? records.definition($0)) ?? EntityCatalog.standard($0) }
    }
}

/// A role as read, with the key and version a write that relied on it is conditioned on.
public struct HeldRole: Sendable {
    public let role: CRMRole
    public let key: [UInt8]
    public let version: UInt64
}

/// Parsed roles by name and version, at most `capacity` (then emptied: roles are few).
public final class RoleCache: Sendable {
    private let roles = Mutex<[String: HeldRole]>([:])
    public static let capacity = 1024

    public init() {}

    func role(_ name: String, version: UInt64) -> HeldRole? {
        roles.withLock { $0[name].flatMap { $0.version == version ? $0 : nil } }
    }

    func keep(_ held: HeldRole) {
        roles.withLock {
            if $0.count >= Self.capacity { $0.removeAll() }
            $0[held.role.name] = held
        }
    }
}
