import BinaryCoding
import CRM
import KVStore

/// A user's credentials, beside their record at `c/<workspace>/ua/<user id>`: the password hash
/// (a peppered PHC string), and the epochs every session carries. Raising `credentialEpoch`
/// (a password change, a disable) or `authzEpoch` (a role or team change) ends all of the
/// user's sessions at once, on every member, at their next call.
public struct Credentials: Equatable, Sendable {
    public var passwordHash: String
    public var credentialEpoch: UInt64 = 1
    public var authzEpoch: UInt64 = 1
    /// Set for a bootstrapped or reset account: its sessions may only change the password.
    public var mustChangePassword = false
    /// The TOTP second factor and recovery codes (empty: none enrolled).
    public var secondFactor = SecondFactor()

    public init(passwordHash: String, mustChangePassword: Bool = false) {
        self.passwordHash = passwordHash
        self.mustChangePassword = mustChangePassword
    }

    /// Format 2 adds the second factor; credentials without one are still written as format 1,
    /// which members of the previous release read.
    static let format: UInt8 = 2

    public var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(secondFactor.isEmpty ? 1 : Self.format)
        writer.blob(Array(passwordHash.utf8))
        writer.u64(credentialEpoch)
        writer.u64(authzEpoch)
        writer.bool(mustChangePassword)
        if !secondFactor.isEmpty { secondFactor.write(&writer) }
        return writer.bytes
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let format = reader.u8(), format == 1 || format == Self.format,
            let hash = reader.text(limit: StoredPassword.maxEncodedBytes),
            let credential = reader.u64(), let authz = reader.u64(), let mustChange = reader.bool()
        else { return nil }
        if format == Self.format {
            guard let factor = SecondFactor.read(&reader) else { return nil }
            secondFactor = factor
        }
        guard reader.isAtEnd else { return nil }
        passwordHash = hash
        credentialEpoch = credential
        authzEpoch = authz
        mustChangePassword = mustChange
    }

    public static func key(workspace: UInt32, user: CRMID) -> [UInt8] {
        CRMLayout.workspaceKey(workspace, "/ua/") + user.bytes
    }
}

/// The user's credentials as read, with the version a change is conditioned on.
public struct VersionedCredentials: Equatable, Sendable {
    public var credentials: Credentials
    public var version: UInt64
}

/// The transactions that create users and change their credentials, made by the proposing
/// member (the password already hashed: hashing takes tens of milliseconds and runs before).
public struct DirectoryChanges: Sendable {
    public let records: RecordChanges

    public init(records: RecordChanges) { self.records = records }

    var workspace: UInt32 { records.workspace }

    /// Written by the first user's creation and never removed: bootstrapping works once.
    public var bootstrapMarker: [UInt8] { CRMLayout.workspaceKey(workspace, "/sys/bootstrapped") }

    /// The first user: a security administrator who must change the password at the first
    /// sign-in; refused (its condition fails) once any user was ever bootstrapped.
    public func bootstrap(
        id: CRMID, username: String, passwordHash: String, principal: String, now: UInt64
    ) throws -> Transaction {
        var transaction = try createUser(
            id: id, username: username, displayName: nil, email: nil, roles: ["security-admin"], teams: [],
            credentials: Credentials(passwordHash: passwordHash, mustChangePassword: true), principal: principal,
            now: now)
        transaction.conditions.append(.absent(key: bootstrapMarker))
        transaction.operations.append(.put(key: bootstrapMarker, value: id.bytes))
        // The role templates come with the first user (its own role among them).
        let roles = RoleStore(directory: self)
        for (_, yaml) in RoleTemplates.yaml.sorted(by: { $0.key < $1.key }) {
            let name = try CRMRole.parse(yaml: yaml).name
            transaction.conditions.append(.absent(key: roles.key(name)))
            transaction.operations.append(.putStamped(key: roles.key(name), value: Array(yaml.utf8)))
        }
        return transaction
    }

    /// A user record (owned by the user) and its credentials in one transaction.
    public func createUser(
        id: CRMID, username: String, displayName: String?, email: String?, roles: [String], teams: [CRMID],
        credentials: Credentials, principal: String, now: UInt64
    ) throws -> Transaction {
        var fields: [String: FieldValue] = [
            "username": .text(username), "status": .text("active"), "roles": .texts(roles),
        ]
        if let displayName { fields["display_name"] = .text(displayName) }
        if let email { fields["email"] = .texts([email]) }
        var transaction = try records.create(
            .user, id: id, fields: fields, owner: Self.owner(of: id), teams: teams, principal: principal, now: now)
        let key = Credentials.key(workspace: workspace, user: id)
        transaction.conditions.append(.absent(key: key))
        transaction.operations.append(.putStamped(key: key, value: credentials.encoded))
        return transaction
    }

    /// The owner string of records a user owns (and of the user's own record).
    public static func owner(of user: CRMID) -> String { "crm://user/\(user)" }

    /// The user an owner string names (nil for an application, a member or anything else).
    public static func user(ofOwner owner: String) -> CRMID? {
        guard owner.hasPrefix("crm://user/") else { return nil }
        return CRMID(hex: owner.dropFirst("crm://user/".count))
    }

    public func credentials(of user: CRMID) throws -> VersionedCredentials? {
        guard let value = try records.kv.crmValue(Credentials.key(workspace: workspace, user: user)) else {
            return nil
        }
        guard let credentials = Credentials(encoded: value.payload), let version = value.version else {
            throw RecordError.keys(.doesNotOpen("the credentials of user \(user)"))
        }
        return VersionedCredentials(credentials: credentials, version: version)
    }

    /// A new password: the credential epoch moves on (every session of the user ends) and the
    /// account no longer has to change it.
    public func changePassword(
        of user: CRMID, from current: VersionedCredentials, to passwordHash: String
    )
        -> Transaction
    {
        var next = current.credentials
        next.passwordHash = passwordHash
        next.credentialEpoch += 1
        next.mustChangePassword = false
        return replace(user, current, with: next)
    }

    /// The same password re-hashed (an imported or older hash): no epoch moves.
    public func rehash(of user: CRMID, from current: VersionedCredentials, to passwordHash: String) -> Transaction {
        var next = current.credentials
        next.passwordHash = passwordHash
        return replace(user, current, with: next)
    }

    /// The user was disabled (or is to be signed out everywhere): every session ends.
    public func raiseCredentialEpoch(of user: CRMID, from current: VersionedCredentials) -> Transaction {
        var next = current.credentials
        next.credentialEpoch += 1
        return replace(user, current, with: next)
    }

    /// The user's roles or teams changed: every session ends.
    public func raiseAuthzEpoch(of user: CRMID, from current: VersionedCredentials) -> Transaction {
        var next = current.credentials
        next.authzEpoch += 1
        return replace(user, current, with: next)
    }

    /// `next` in place of the credentials read, conditioned on their version.
    public func replace(_ user: CRMID, _ current: VersionedCredentials, with next: Credentials) -> Transaction {
        let key = Credentials.key(workspace: workspace, user: user)
        return Transaction(
            conditions: [.version(key: key, current.version)], operations: [.putStamped(key: key, value: next.encoded)])
    }
}
