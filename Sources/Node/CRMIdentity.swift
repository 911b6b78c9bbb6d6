import CRM
import Foundation
import GRPCCore
import Identity
import Synchronization

/// Sign-in on a member: the directory's transactions over the CRM's records, and the password
/// hasher, made once the key set (whose pepper it uses) exists. Hashing is bounded: as many at
/// once as the member has cores, a line of 64, then RESOURCE_EXHAUSTED.
final class CRMIdentity: Sendable {
    let crm: CRMRecords
    private let hasher = Mutex<PasswordHasher?>(nil)
    private let roleCache = RoleCache()
    static let maxQueuedHashes = 64

    /// Whether every user needs a second factor (`crm.mfa: required`).
    let mfaRequired: Bool

    /// Where addresses are (`crm.geo_file`), for the new-country and impossible-travel alerts.
    let geo: GeoTable

    /// The cluster's failed sign-ins (counted while this member leads) for AUTH_ATTACK.
    let attacks: AuthAttackWatch

    init(
        crm: CRMRecords, mfaRequired: Bool = true, geo: GeoTable = GeoTable(),
        attacks: AuthAttackWatch = AuthAttackWatch(
            threshold: NodeConfig.CRM.defaultAuthAttackFailuresPerMinute, isolates: false)
    ) {
        self.crm = crm
        self.mfaRequired = mfaRequired
        self.geo = geo
        self.attacks = attacks
    }

    /// Alert streams being served (bounded: each polls the store).
    let watches = StreamCount()

    var histories: LoginHistories { LoginHistories(directory: directory) }
    var alerts: SecurityAlerts { SecurityAlerts(kv: crm.changes.kv, workspace: crm.changes.workspace) }

    var directory: DirectoryChanges { DirectoryChanges(records: crm.changes) }
    var sessions: SessionChanges {
        var sessions = SessionChanges(directory: directory)
        sessions.policy.mfaRequired = mfaRequired
        return sessions
    }

    /// The sign-in throttles (keyed digests under the key set's pepper).
    func throttles() throws -> SignInThrottles {
        let keySet = try keySetInUse()
        return SignInThrottles(directory: directory, pepper: keySet.key(.pepper))
    }

    /// The second factor's changes (under the key set's pepper and secrets key).
    func secondFactor() throws -> SecondFactorChanges {
        let keySet = try keySetInUse()
        return SecondFactorChanges(directory: directory, pepper: keySet.key(.pepper))
    }

    /// The roles of `names` that exist, with their versions (parsed once per version).
    func roles(_ names: [String]) throws -> [HeldRole] {
        try RoleStore(directory: directory).held(names, cache: roleCache)
    }

    func signIn() throws -> SignIn { SignIn(sessions: sessions, hasher: try passwordHasher()) }

    func passwordHasher() throws -> PasswordHasher {
        if let ready = hasher.withLock({ $0 }) { return ready }
        let keySet = try keySetInUse()
        let made = try PasswordHasher(
            pepper: keySet.key(.pepper), maxConcurrent: max(1, ProcessInfo.processInfo.activeProcessorCount),
            maxQueued: Self.maxQueuedHashes)
        return hasher.withLock { current in
            if let current { return current }
            current = made
            return made
        }
    }

    /// The key set whose pepper and secrets key sign-in uses; UNAVAILABLE before the first user.
    private func keySetInUse() throws -> CRMKeySet {
        guard let keySet = try crm.keys.inUse() else {
            throw RPCError(code: .unavailable, message: "the CRM has no key set yet; bootstrap its first user")
        }
        return keySet
    }

    /// Identity errors as gRPC statuses: every sign-in and session failure is the same
    /// UNAUTHENTICATED.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch is SignInRefused {
            throw signInRefused
        } catch let throttled as SignInThrottled {
            // The same answer as any refusal, with the time to try again (none while locked).
            var metadata = Metadata()
            if let after = throttled.retryAfterMillis {
                metadata.addString(String(after), forKey: RefusalMetadata.retryAfter)
            }
            throw RPCError(code: .unauthenticated, message: SignInRefused().description, metadata: metadata)
        } catch is SessionRefusal {
            throw noSession
        } catch let refusal as PasswordRefusal {
            throw RPCError(code: .invalidArgument, message: refusal.description)
        } catch let error as RoleError {
            throw RPCError(code: .invalidArgument, message: error.description)
        } catch let refusal as SecondFactorRefusal {
            switch refusal {
            case .wrongCode, .locked: throw RPCError(code: .unauthenticated, message: refusal.description)
            case .notEnrolled, .nothingToConfirm:
                throw RPCError(code: .failedPrecondition, message: refusal.description)
            }
        } catch let busy as PasswordHasherError {
            throw RPCError(code: .resourceExhausted, message: busy.description)
        }
    }

    static let signInRefused = RPCError(code: .unauthenticated, message: SignInRefused().description)
    static let noSession = RPCError(code: .unauthenticated, message: "no valid session; sign in again")

    /// The token of `authorization: Bearer <token>`: exactly one such header, one space, a
    /// token's shape; anything else is no session.
    static func bearer(_ metadata: Metadata) throws -> String {
        let values = Array(metadata[stringValues: "authorization"])
        guard values.count == 1, values[0].hasPrefix("Bearer "), values[0].utf8.count <= 128 else { throw noSession }
        let token = String(values[0].dropFirst("Bearer ".count))
        guard SessionTokens.digest(token) != nil else { throw noSession }
        return token
    }
}

/// A count of open streams with a bound.
final class StreamCount: Sendable {
    private let open = Mutex(0)

    /// Counts one more stream, unless `limit` are open.
    func enter(limit: Int) -> Bool {
        open.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() {
        open.withLock { count in
            precondition(count > 0, "a stream leaves that never entered")
            count -= 1
        }
    }
}
