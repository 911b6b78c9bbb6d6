import BinaryCoding
import CRM
import Foundation
import KVStore
import Sealing

/// How long sessions last.
public struct SessionPolicy: Equatable, Sendable {
    public var idleMillis: UInt64 = 30 * 60_000
    public var absoluteMillis: UInt64 = 12 * 3_600_000
    /// `lastSeen` is written at most this often (a write per session a minute, not per call).
    public var touchEveryMillis: UInt64 = 60_000
    /// Users without a second factor get sessions that may only enrol one (`auth.mfa: required`).
    public var mfaRequired = true
    /// How recent a second factor must be for a sensitive change (a step-up).
    public var stepUpMillis: UInt64 = 10 * 60_000

    public init() {}
}

/// A signed-in user's session, kept at `c/<workspace>/ss/<SHA-256 of the token>` (the token
/// itself is never stored), with an entry under the user for listing their sessions.
public struct Session: Equatable, Sendable {
    public var user: CRMID
    /// The application (client certificate identity) it was opened through, and the only one
    /// it is accepted from.
    public var application: String
    /// The end user's address it is bound to, when the application asserts one.
    public var boundAddress: String?
    public var createdAtMillis: UInt64
    public var lastSeenMillis: UInt64
    public var credentialEpoch: UInt64
    public var authzEpoch: UInt64
    /// A session that may only change the password (the account must).
    public var passwordChangeOnly: Bool
    /// When the user last passed the second factor in this session (0: never): sign-in with a
    /// code, enrolment or a step-up.
    public var secondFactorAtMillis: UInt64 = 0
    /// A session that may only enrol a second factor (`auth.mfa: required` and none yet).
    public var enrolmentOnly = false

    /// Format 2 adds the second factor's time and the enrolment-only flag; sessions with
    /// neither are still written as format 1, which members of the previous release read.
    static let format: UInt8 = 2

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        let plain = secondFactorAtMillis == 0 && !enrolmentOnly
        writer.u8(plain ? 1 : Self.format)
        writer.blob(user.bytes)
        writer.blob(Array(application.utf8))
        writer.optionalBlob(boundAddress.map { Array($0.utf8) })
        writer.u64(createdAtMillis)
        writer.u64(lastSeenMillis)
        writer.u64(credentialEpoch)
        writer.u64(authzEpoch)
        writer.bool(passwordChangeOnly)
        if !plain {
            writer.u64(secondFactorAtMillis)
            writer.bool(enrolmentOnly)
        }
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let format = reader.u8(), format == 1 || format == Self.format,
            let idBytes = reader.blob(limit: CRMID.byteCount),
            let user = CRMID(bytes: idBytes), let application = reader.text(limit: 256),
            let address = reader.optionalBlob(limit: 64),
            let created = reader.u64(), let lastSeen = reader.u64(), let credential = reader.u64(),
            let authz = reader.u64(), let changeOnly = reader.bool()
        else { return nil }
        if format == Self.format {
            guard let factorAt = reader.u64(), let enrolment = reader.bool() else { return nil }
            secondFactorAtMillis = factorAt
            enrolmentOnly = enrolment
        }
        guard reader.isAtEnd else { return nil }
        self.user = user
        self.application = application
        boundAddress = address.map { String(decoding: $0, as: UTF8.self) }
        createdAtMillis = created
        lastSeenMillis = lastSeen
        credentialEpoch = credential
        authzEpoch = authz
        passwordChangeOnly = changeOnly
    }

    init(
        user: CRMID, application: String, boundAddress: String?, now: UInt64, credentials: Credentials,
        secondFactorAt: UInt64 = 0, mfaRequired: Bool
    ) {
        self.user = user
        self.application = application
        self.boundAddress = boundAddress
        createdAtMillis = now
        lastSeenMillis = now
        credentialEpoch = credentials.credentialEpoch
        authzEpoch = credentials.authzEpoch
        passwordChangeOnly = credentials.mustChangePassword
        secondFactorAtMillis = secondFactorAt
        enrolmentOnly = mfaRequired && credentials.secondFactor.active == nil
    }

    /// Whether the user passed a second factor within `millis` before `now`.
    public func secondFactorWithin(_ millis: UInt64, of now: UInt64) -> Bool {
        secondFactorAtMillis > 0 && now < secondFactorAtMillis &+ millis
    }
}

/// Bearer tokens: `crm_s_` and 43 characters of base64url (256 random bits).
public enum SessionTokens {
    public static let prefix = "crm_s_"
    static let randomBytes = 32
    static let textCharacters = 43

    public static func generate() throws -> String {
        let bytes = try SecureRandom.bytes(randomBytes)
        return prefix
            + Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The SHA-256 a session is stored under, or nil for anything not shaped like a token.
    public static func digest(_ token: String) -> [UInt8]? {
        guard token.utf8.count == prefix.utf8.count + textCharacters, token.hasPrefix(prefix),
            token.utf8.dropFirst(prefix.utf8.count).allSatisfy({
                (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
                    || $0 == UInt8(ascii: "_")
            })
        else { return nil }
        return HMACSHA256.sha256(Array(token.utf8))
    }
}

/// Why a session is refused. Callers answer every one with the same 401 (UNAUTHENTICATED); the
/// reason is for the audit trail and the member's own log.
public enum SessionRefusal: Error, Equatable, Sendable {
    case malformed, unknown, otherApplication, otherAddress, expired, idle, revoked, disabled
}

/// A session that passed every check, with the user it belongs to.
public struct CheckedSession: Equatable, Sendable {
    public var digest: [UInt8]
    public var session: Session
    public var version: UInt64
    /// The user's record and the version of their credentials, as the check read them (so that
    /// a caller checking rights need not read them again).
    public var user: StoredRecord
    public var credentialsVersion: UInt64
}

/// The transactions that open, touch and end sessions, and the check made on every call.
public struct SessionChanges: Sendable {
    public let directory: DirectoryChanges
    public var policy = SessionPolicy()

    public init(directory: DirectoryChanges) { self.directory = directory }

    var workspace: UInt32 { directory.records.workspace }
    var kv: ReplicatedKV { directory.records.kv }

    func key(_ digest: [UInt8]) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/ss/") + digest }
    func userEntry(_ user: CRMID, _ digest: [UInt8]) -> [UInt8] { userPrefix(user) + digest }
    func userPrefix(_ user: CRMID) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/su/") + user.bytes }

    /// A new session for `user`, conditioned on the credentials read (a password or role change
    /// meanwhile makes it fail).
    public func open(
        token: String, user: CRMID, credentials: VersionedCredentials, application: String, address: String?,
        now: UInt64, secondFactorAt: UInt64 = 0
    ) -> Transaction {
        let session = Session(
            user: user, application: application, boundAddress: address, now: now, credentials: credentials.credentials,
            secondFactorAt: secondFactorAt, mfaRequired: policy.mfaRequired)
        var transaction = write(session, token: token)
        transaction.conditions.insert(
            .version(key: Credentials.key(workspace: workspace, user: user), credentials.version), at: 0)
        return transaction
    }

    /// Stores `session` under `token`'s digest (which must be free) with its entry under the user.
    func write(_ session: Session, token: String) -> Transaction {
        let digest = SessionTokens.digest(token)!
        return Transaction(
            conditions: [.absent(key: key(digest))],
            operations: [
                .putStamped(key: key(digest), value: session.encoded),
                .put(key: userEntry(session.user, digest), value: []),
            ])
    }

    /// The session `token` names, if it may be used now by `application` from `address`.
    public func check(token: String, application: String, address: String?, now: UInt64) throws -> CheckedSession {
        guard let digest = SessionTokens.digest(token) else { throw SessionRefusal.malformed }
        guard let value = try kv.crmValue(key(digest)) else { throw SessionRefusal.unknown }
        guard let session = Session(encoded: value.payload), let version = value.version else {
            throw SessionRefusal.unknown
        }
        guard session.application == application else { throw SessionRefusal.otherApplication }
        if let bound = session.boundAddress, bound != address { throw SessionRefusal.otherAddress }
        guard now < session.createdAtMillis &+ policy.absoluteMillis else { throw SessionRefusal.expired }
        guard now < session.lastSeenMillis &+ policy.idleMillis else { throw SessionRefusal.idle }
        guard let credentials = try directory.credentials(of: session.user),
            credentials.credentials.credentialEpoch == session.credentialEpoch,
            credentials.credentials.authzEpoch == session.authzEpoch
        else { throw SessionRefusal.revoked }
        guard let user = try directory.records.read(.user, session.user),
            try directory.records.open(user.record, fields: ["status"])["status"] == .text("active")
        else { throw SessionRefusal.disabled }
        return CheckedSession(
            digest: digest, session: session, version: version, user: user.record,
            credentialsVersion: credentials.version)
    }

    /// Moves `lastSeen` on, when it is older than the policy's touch interval (nil: not yet).
    public func touch(_ checked: CheckedSession, now: UInt64) -> Transaction? {
        guard now >= checked.session.lastSeenMillis &+ policy.touchEveryMillis else { return nil }
        var session = checked.session
        session.lastSeenMillis = now
        return Transaction(
            conditions: [.version(key: key(checked.digest), checked.version)],
            operations: [.putStamped(key: key(checked.digest), value: session.encoded)])
    }

    /// A new token in place of `checked`'s session (a new token at every password change,
    /// enrolment and step-up): same user, application and bound address, the session's clock
    /// started again, the credentials' epochs as `credentials` will have them.
    public func renewal(
        of checked: CheckedSession, token: String, credentials: Credentials, now: UInt64, secondFactorAt: UInt64
    ) -> Transaction {
        let session = Session(
            user: checked.session.user, application: checked.session.application,
            boundAddress: checked.session.boundAddress, now: now, credentials: credentials,
            secondFactorAt: secondFactorAt, mfaRequired: policy.mfaRequired)
        var transaction = write(session, token: token)
        transaction.operations += end(digest: checked.digest, of: checked.session.user).operations
        return transaction
    }

    /// Ends one session (a sign-out, or a revocation by its owner).
    public func end(digest: [UInt8], of user: CRMID) -> Transaction {
        Transaction(operations: [.delete(key: key(digest)), .delete(key: userEntry(user, digest))])
    }

    /// The user's sessions (at most `limit`), each with the digest that names it.
    public func sessions(of user: CRMID, limit: Int = 100) throws -> [(digest: [UInt8], session: Session)] {
        let prefix = userPrefix(user)
        let page = try kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: limit)
        return try page.entries.compactMap { entry in
            let digest = Array(entry.key.dropFirst(prefix.count))
            guard let value = try kv.crmValue(key(digest)), let session = Session(encoded: value.payload) else {
                return nil
            }
            return (digest, session)
        }
    }
}
