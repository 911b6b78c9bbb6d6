import CRM
import KVStore
import Sealing

/// Why a second factor was not accepted. Sign-in answers every one with the same 401; enrolment
/// and step-up name the reason to the signed-in user.
public enum SecondFactorRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case wrongCode
    case locked(untilMillis: UInt64)
    case notEnrolled
    case nothingToConfirm

    public var description: String {
        switch self {
        case .wrongCode: return "the code is wrong, expired or already used"
        case .locked: return "too many wrong codes: the second factor is locked for a while"
        case .notEnrolled: return "no second factor is enrolled (crmctl mfa enrol)"
        case .nothingToConfirm: return "no enrolment waits for confirmation (crmctl mfa enrol first)"
        }
    }
}

/// The changes to a user's second factor (RFC 6238 TOTP and recovery codes), computed on the
/// proposing member from the credentials it read; each is written by a transaction
/// conditioned on that version, so that one code raced through two fronts is accepted once.
public struct SecondFactorChanges: Sendable {
    public let directory: DirectoryChanges
    let pepper: SymmetricKey
    /// Wrong codes allowed in a window before the factor locks, the window, and the lock.
    public var maxFailures: UInt8 = 10
    public var failureWindowMillis: UInt64 = 15 * 60_000
    public var lockMillis: UInt64 = 15 * 60_000

    public init(directory: DirectoryChanges, pepper: SymmetricKey) {
        self.directory = directory
        self.pepper = pepper
    }

    var workspace: UInt32 { directory.records.workspace }

    /// A new secret waiting for its first code (an active factor stays until it is confirmed).
    public func enrol(_ user: CRMID, _ credentials: Credentials) throws -> (secret: [UInt8], next: Credentials) {
        let secret = try SecureRandom.bytes(TOTP.secretBytes)
        var next = credentials
        next.secondFactor.pending = try SealedTOTPSecret.seal(
            secret, workspace: workspace, user: user, keys: try directory.records.inUse())
        return (secret, next)
    }

    /// The waiting secret made active by a valid code: fresh recovery codes, and every other
    /// session of the user ended (the credential epoch moves on).
    public func confirm(
        _ user: CRMID, _ credentials: Credentials, code: String, now: UInt64
    ) throws -> (recoveryCodes: [String], next: Credentials) {
        guard let pending = credentials.secondFactor.pending else { throw SecondFactorRefusal.nothingToConfirm }
        try checkNotLocked(credentials, now: now)
        let secret = try pending.open(workspace: workspace, user: user, keys: directory.records.keys)
        guard
            let step = TOTP.acceptedStep(
                of: code, secret: secret, atMillis: now, above: credentials.secondFactor.lastStep)
        else { throw SecondFactorRefusal.wrongCode }
        var next = credentials
        next.secondFactor.active = pending
        next.secondFactor.pending = nil
        next.secondFactor.lastStep = step
        next.secondFactor.failuresInWindow = 0
        next.credentialEpoch += 1
        let codes = try RecoveryCodes.generate()
        next.secondFactor.recoveryCodes = codes.map { RecoveryCode(digest: digest($0, user)!, used: false) }
        return (codes, next)
    }

    /// The credentials after `code` (six digits) or `recoveryCode` is accepted: the step moves
    /// past the code's or the recovery code is spent, and a secret sealed under an older key
    /// set is sealed again under the one in use.
    public func verified(
        _ user: CRMID, _ credentials: Credentials, code: String, recoveryCode: String, now: UInt64
    ) throws -> Credentials {
        guard let active = credentials.secondFactor.active else { throw SecondFactorRefusal.notEnrolled }
        try checkNotLocked(credentials, now: now)
        var next = credentials
        if !recoveryCode.isEmpty {
            guard let wanted = digest(recoveryCode, user),
                let index = next.secondFactor.recoveryCodes.indices.first(where: {
                    !next.secondFactor.recoveryCodes[$0].used
                        && constantTimeEqual(next.secondFactor.recoveryCodes[$0].digest, wanted)
                })
            else { throw SecondFactorRefusal.wrongCode }
            next.secondFactor.recoveryCodes[index].used = true
        } else {
            let secret = try active.open(workspace: workspace, user: user, keys: directory.records.keys)
            guard
                let step = TOTP.acceptedStep(
                    of: code, secret: secret, atMillis: now, above: credentials.secondFactor.lastStep)
            else { throw SecondFactorRefusal.wrongCode }
            next.secondFactor.lastStep = step
            let keys = try directory.records.inUse()
            if active.keyVersion != keys.version {
                next.secondFactor.active = try SealedTOTPSecret.seal(
                    secret, workspace: workspace, user: user, keys: keys)
            }
        }
        next.secondFactor.failuresInWindow = 0
        return next
    }

    /// The credentials after a wrong code: counted in the window, and locked past the bound.
    public func failed(_ credentials: Credentials, now: UInt64) -> Credentials {
        var next = credentials
        var factor = next.secondFactor
        if now >= factor.failureWindowStartMillis &+ failureWindowMillis || factor.failuresInWindow == 0 {
            factor.failureWindowStartMillis = now
            factor.failuresInWindow = 0
        }
        factor.failuresInWindow += 1
        if factor.failuresInWindow >= maxFailures {
            factor.lockedUntilMillis = now &+ lockMillis
            factor.failuresInWindow = 0
        }
        next.secondFactor = factor
        return next
    }

    /// Ten new recovery codes; the old ones stop working.
    public func regenerated(
        _ user: CRMID, _ credentials: Credentials
    ) throws -> (
        recoveryCodes: [String], next: Credentials
    ) {
        guard credentials.secondFactor.active != nil else { throw SecondFactorRefusal.notEnrolled }
        let codes = try RecoveryCodes.generate()
        var next = credentials
        next.secondFactor.recoveryCodes = codes.map { RecoveryCode(digest: digest($0, user)!, used: false) }
        return (codes, next)
    }

    /// No second factor any more (an administrator's reset for a lost device): every session
    /// of the user ends, and with `auth.mfa: required` the next sign-in may only enrol again.
    public func reset(_ credentials: Credentials) -> Credentials {
        var next = credentials
        next.secondFactor = SecondFactor()
        next.credentialEpoch += 1
        return next
    }

    private func checkNotLocked(_ credentials: Credentials, now: UInt64) throws {
        let until = credentials.secondFactor.lockedUntilMillis
        if now < until { throw SecondFactorRefusal.locked(untilMillis: until) }
    }

    private func digest(_ code: String, _ user: CRMID) -> [UInt8]? {
        RecoveryCodes.digest(code, user: user, pepper: pepper)
    }
}
