import CRM
import KVStore

/// Every sign-in failure, whatever its cause: one answer, so that nothing tells whether the
/// user exists, is disabled or typed the wrong password.
public struct SignInRefused: Error, Equatable, Sendable, CustomStringConvertible {
    public init() {}
    public var description: String { "the username or password is wrong" }
}

/// Signing in and changing one's password: a username and password checked at the cost of one
/// Argon2id hash whatever the outcome, and the transactions that follow.
public struct SignIn: Sendable {
    public let sessions: SessionChanges
    public let hasher: PasswordHasher
    public var policy = PasswordPolicy()

    public init(sessions: SessionChanges, hasher: PasswordHasher) {
        self.sessions = sessions
        self.hasher = hasher
    }

    var directory: DirectoryChanges { sessions.directory }

    /// A new session's token and the transaction that opens it (with the password re-hashed
    /// when the stored hash was imported or of other costs).
    public struct Opened: Sendable {
        public var token: String
        public var user: CRMID
        public var transaction: Transaction
        public var passwordChangeOnly: Bool
    }

    public func attempt(
        username: String, password: String, application: String, address: String?, bindAddress: Bool, now: UInt64
    ) async throws -> Opened {
        guard username.utf8.count <= 256, password.utf8.count <= PasswordPolicy.maximumBytes else {
            throw SignInRefused()
        }
        let found = try directory.records.lookup(.user, by: .username, value: username) ?? []
        let user = found.count == 1 ? found[0] : nil
        let credentials = try user.flatMap { try directory.credentials(of: $0.record.id) }
        let verification = try await hasher.verify(password, stored: credentials?.credentials.passwordHash)
        guard case .match(let rehashed) = verification, let user, let credentials,
            try directory.records.open(user.record, fields: ["status"])["status"] == .text("active")
        else { throw SignInRefused() }
        let token = try SessionTokens.generate()
        var transaction = sessions.open(
            token: token, user: user.record.id, credentials: credentials, application: application,
            address: bindAddress ? address : nil, now: now)
        if let rehashed {
            transaction.operations += directory.rehash(of: user.record.id, from: credentials, to: rehashed).operations
        }
        return Opened(
            token: token, user: user.record.id, transaction: transaction,
            passwordChangeOnly: credentials.credentials.mustChangePassword)
    }

    /// A new password for the session's user, after the current one is checked and the new one
    /// passes the policy: every session of the user ends (the credential epoch moves on) and a
    /// fresh one opens in the same transaction.
    public func changePassword(
        _ checked: CheckedSession, current: String, new: String, now: UInt64
    ) async throws -> (token: String, transaction: Transaction) {
        let userID = checked.session.user
        guard let user = try directory.records.read(.user, userID),
            let credentials = try directory.credentials(of: userID)
        else { throw SignInRefused() }
        guard case .match = try await hasher.verify(current, stored: credentials.credentials.passwordHash) else {
            throw SignInRefused()
        }
        let fields = try directory.records.open(user.record, fields: ["username", "email"])
        guard case .text(let username)? = fields["username"] else { throw SignInRefused() }
        var email: String?
        if case .texts(let emails)? = fields["email"] { email = emails.first }
        if let refusal = policy.refusal(of: new, username: username, email: email) { throw refusal }
        let hash = try await hasher.hash(new)
        var transaction = directory.changePassword(of: userID, from: credentials, to: hash)
        var next = credentials.credentials
        next.credentialEpoch += 1
        next.mustChangePassword = false
        let token = try SessionTokens.generate()
        let session = Session(
            user: userID, application: checked.session.application, boundAddress: checked.session.boundAddress,
            now: now, credentials: next)
        let opened = sessions.write(session, token: token)
        transaction.conditions += opened.conditions
        transaction.operations += opened.operations
        transaction.operations += sessions.end(digest: checked.digest, of: userID).operations
        return (token, transaction)
    }
}
