import CRM
import KVStore

/// Every sign-in failure, whatever its cause: one answer, so that nothing tells whether the
/// user exists, is disabled or typed the wrong password.
public struct SignInRefused: Error, Equatable, Sendable, CustomStringConvertible {
    /// The user the attempt named, when one exists (for the audit trail, never for the answer).
    public var user: CRMID?
    public init(user: CRMID? = nil) { self.user = user }
    /// Every refusal is the same refusal, whoever it names.
    public static func == (_: SignInRefused, _: SignInRefused) -> Bool { true }
    public var description: String { "the username or password is wrong" }
}

/// A sign-in refused before its password was checked: the account or the source is backing
/// off (or the account is locked). Answered like every other refusal, with the time to retry.
public struct SignInThrottled: Error, Equatable, Sendable {
    /// How long until an attempt may be made again; nil while the account is locked until
    /// unlocked.
    public var retryAfterMillis: UInt64?
    public var user: CRMID?
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

    /// What a sign-in step hands out, and the transaction that must apply first: a session's
    /// token, or (for a user with a second factor) a ticket to complete the sign-in with.
    public struct Opened: Sendable {
        public var token: String
        public var user: CRMID
        public var transaction: Transaction
        public var passwordChangeOnly: Bool
        /// `token` is a ticket: the sign-in completes with a code (`complete`).
        public var secondFactorRequired = false
        /// The session may only enrol a second factor.
        public var enrolmentOnly = false
        /// The device token's digest the sign-in came with (for a session: now a known device).
        public var device: [UInt8]?
        /// Consecutive failed passwords just before this one (its success forgets them).
        public var failuresBefore: UInt32 = 0
    }

    public func attempt(
        username: String, password: String, application: String, address: String?, bindAddress: Bool, now: UInt64,
        throttles: SignInThrottles? = nil, source: AttemptSource? = nil, device: [UInt8]? = nil,
        knownDevice: (CRMID) throws -> Bool = { _ in false }
    ) async throws -> Opened {
        guard username.utf8.count <= 256, password.utf8.count <= PasswordPolicy.maximumBytes else {
            throw SignInRefused()
        }
        let found = try directory.records.lookup(.user, by: .username, value: username) ?? []
        let user = found.count == 1 ? found[0] : nil
        let source = source ?? AttemptSource.of(address: address, application: application)
        let credentials = try user.flatMap { try directory.credentials(of: $0.record.id) }
        var failuresBefore: UInt32 = 0
        if let throttles {
            let id = user?.record.id
            var until = try throttles.retryAt(user: id, source: source, now: now)
            // Only a held attempt asks whether its device is known (a sealed read).
            if until != nil, let id, credentials?.credentials.secondFactor.active != nil, try knownDevice(id) {
                until = try throttles.retryAt(user: id, source: source, now: now, knownDevice: true)
            }
            if let until { throw SignInThrottled(retryAfterMillis: until == .max ? nil : until - now, user: id) }
            failuresBefore = try user.flatMap { try throttles.account($0.record.id)?.0.consecutive } ?? 0
        }
        let verification = try await hasher.verify(password, stored: credentials?.credentials.passwordHash)
        guard case .match(let rehashed) = verification, let user, let credentials,
            try directory.records.open(user.record, fields: ["status"])["status"] == .text("active")
        else { throw SignInRefused(user: user?.record.id) }
        let bound = bindAddress ? address : nil
        var opened: Opened
        if credentials.credentials.secondFactor.active != nil {
            let ticket = try TicketTokens.generate(for: user.record.id)
            let stored = SignInTicket(
                digest: TicketTokens.parse(ticket)!.digest, application: application, boundAddress: bound,
                createdAtMillis: now, device: device)
            let transaction = Transaction(
                conditions: [.version(key: credentialsKey(user.record.id), credentials.version)],
                operations: [.putStamped(key: ticketKey(user.record.id), value: stored.encoded)])
            opened = Opened(
                token: ticket, user: user.record.id, transaction: transaction, passwordChangeOnly: false,
                secondFactorRequired: true)
        } else {
            let token = try SessionTokens.generate()
            let transaction = sessions.open(
                token: token, user: user.record.id, credentials: credentials, application: application,
                address: bound, now: now)
            opened = Opened(
                token: token, user: user.record.id, transaction: transaction,
                passwordChangeOnly: credentials.credentials.mustChangePassword,
                enrolmentOnly: sessions.policy.mfaRequired)
        }
        if let rehashed {
            opened.transaction.operations +=
                directory.rehash(of: user.record.id, from: credentials, to: rehashed).operations
        }
        if let throttles { opened.transaction.operations.append(throttles.cleared(user.record.id)) }
        opened.device = device
        opened.failuresBefore = failuresBefore
        return opened
    }

    /// The end of a sign-in that waits for its second factor: a session when `code` (or
    /// `recoveryCode`) is accepted for the ticket's user, or else the transaction that counts the
    /// failure (on the ticket, which dies at its fifth, and on the factor).
    public enum Completion: Sendable {
        case opened(Opened)
        /// `locks`: this failure locks the second factor (an alert is due).
        case refused(Transaction?, SecondFactorRefusal, locks: Bool)
    }

    public func complete(
        ticket: String, code: String, recoveryCode: String, application: String, factor: SecondFactorChanges,
        now: UInt64
    ) throws -> Completion {
        guard code.utf8.count <= 16, recoveryCode.utf8.count <= 32, let (userID, digest) = TicketTokens.parse(ticket),
            let stored = try directory.records.kv.crmValue(ticketKey(userID)), let ticketVersion = stored.version,
            let waiting = SignInTicket(encoded: stored.payload), constantTimeEqual(waiting.digest, digest),
            waiting.application == application, now < waiting.createdAtMillis &+ SignInTicket.lifetimeMillis,
            let user = try directory.records.read(.user, userID),
            try directory.records.open(user.record, fields: ["status"])["status"] == .text("active"),
            let credentials = try directory.credentials(of: userID)
        else { throw SignInRefused() }
        let ticketHeld = TransactionCondition.version(key: ticketKey(userID), ticketVersion)
        let verified: Credentials
        do {
            verified = try factor.verified(
                userID, credentials.credentials, code: code, recoveryCode: recoveryCode, now: now)
        } catch let refusal as SecondFactorRefusal {
            var counted = waiting
            counted.failures += 1
            let failed = factor.failed(credentials.credentials, now: now)
            var transaction = directory.replace(userID, credentials, with: failed)
            transaction.conditions.append(ticketHeld)
            transaction.operations.append(
                counted.failures >= SignInTicket.maxFailures
                    ? .delete(key: ticketKey(userID)) : .putStamped(key: ticketKey(userID), value: counted.encoded))
            let locks =
                failed.secondFactor.lockedUntilMillis > credentials.credentials.secondFactor.lockedUntilMillis
            return .refused(transaction, refusal, locks: locks)
        }
        let token = try SessionTokens.generate()
        let session = Session(
            user: userID, application: application, boundAddress: waiting.boundAddress, now: now,
            credentials: verified, secondFactorAt: now, mfaRequired: sessions.policy.mfaRequired)
        var transaction = directory.replace(userID, credentials, with: verified)
        transaction.conditions.append(ticketHeld)
        transaction.operations.append(.delete(key: ticketKey(userID)))
        let opened = sessions.write(session, token: token)
        transaction.conditions += opened.conditions
        transaction.operations += opened.operations
        return .opened(
            Opened(
                token: token, user: userID, transaction: transaction, passwordChangeOnly: false,
                device: waiting.device))
    }

    func credentialsKey(_ user: CRMID) -> [UInt8] { Credentials.key(workspace: directory.workspace, user: user) }
    func ticketKey(_ user: CRMID) -> [UInt8] { CRMLayout.workspaceKey(directory.workspace, "/tk/") + user.bytes }

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
        let renewed = sessions.renewal(
            of: checked, token: token, credentials: next, now: now,
            secondFactorAt: checked.session.secondFactorAtMillis)
        transaction.conditions += renewed.conditions
        transaction.operations += renewed.operations
        return (token, transaction)
    }
}
