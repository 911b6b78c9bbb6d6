import BinaryCoding
import CRM
import Sealing

/// A TOTP secret as stored: sealed under the secrets key of one key-set version, bound to the
/// workspace, the user and that version (a secret copied to another user does not open).
public struct SealedTOTPSecret: Equatable, Sendable {
    public var sealed: [UInt8]
    public var keyVersion: UInt64

    static let maxSealedBytes = TOTP.secretBytes + Sealed.overheadBytes

    static func binding(workspace: UInt32, user: CRMID, version: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.blob(Array("crm.totp.v1".utf8))
        writer.u32(workspace)
        writer.blob(user.bytes)
        writer.u64(version)
        return writer.bytes
    }

    static func seal(_ secret: [UInt8], workspace: UInt32, user: CRMID, keys: CRMKeySet) throws -> SealedTOTPSecret {
        precondition(secret.count == TOTP.secretBytes)
        let sealed = try Sealed.seal(
            secret, under: keys.key(.secrets),
            binding: binding(workspace: workspace, user: user, version: keys.version))
        return SealedTOTPSecret(sealed: sealed, keyVersion: keys.version)
    }

    func open(workspace: UInt32, user: CRMID, keys: CRMKeyState) throws -> [UInt8] {
        let set = try keys.keySet(keyVersion)
        guard
            let secret = try Sealed.open(
                sealed, under: set.key(.secrets),
                binding: Self.binding(workspace: workspace, user: user, version: keyVersion)),
            secret.count == TOTP.secretBytes
        else { throw RecordError.keys(.doesNotOpen("the second factor of user \(user)")) }
        return secret
    }

    func write(_ writer: inout BinaryWriter) {
        writer.blob(sealed)
        writer.u64(keyVersion)
    }

    static func read(_ reader: inout BinaryReader) -> SealedTOTPSecret? {
        guard let sealed = reader.blob(limit: maxSealedBytes), let version = reader.u64() else { return nil }
        return SealedTOTPSecret(sealed: sealed, keyVersion: version)
    }
}

/// One of a user's recovery codes: only its keyed digest is stored, and it is spent once.
public struct RecoveryCode: Equatable, Sendable {
    public var digest: [UInt8]
    public var used: Bool
}

/// A user's second factor, kept in their credentials: the confirmed TOTP secret, one waiting
/// for its first code, the highest time step used (no code is accepted twice), and the
/// recovery codes.
public struct SecondFactor: Equatable, Sendable {
    public var active: SealedTOTPSecret?
    public var pending: SealedTOTPSecret?
    public var lastStep: UInt64 = 0
    public var recoveryCodes: [RecoveryCode] = []
    /// Wrong codes: the start of the current window, how many in it, and the time the factor
    /// stays locked until after too many (every code refused, even the right one).
    public var failureWindowStartMillis: UInt64 = 0
    public var failuresInWindow: UInt8 = 0
    public var lockedUntilMillis: UInt64 = 0

    public init() {}

    public var isEmpty: Bool { active == nil && pending == nil && recoveryCodes.isEmpty }
    public var unusedRecoveryCodes: Int { recoveryCodes.count { !$0.used } }

    static let maxRecoveryCodes = 10

    func write(_ writer: inout BinaryWriter) {
        for secret in [active, pending] {
            writer.bool(secret != nil)
            secret?.write(&writer)
        }
        writer.u64(lastStep)
        writer.u8(UInt8(recoveryCodes.count))
        for code in recoveryCodes {
            writer.raw(code.digest)
            writer.bool(code.used)
        }
        writer.u64(failureWindowStartMillis)
        writer.u8(failuresInWindow)
        writer.u64(lockedUntilMillis)
    }

    static func read(_ reader: inout BinaryReader) -> SecondFactor? {
        var factor = SecondFactor()
        for index in 0..<2 {
            guard let present = reader.bool() else { return nil }
            guard present else { continue }
            guard let secret = SealedTOTPSecret.read(&reader) else { return nil }
            if index == 0 { factor.active = secret } else { factor.pending = secret }
        }
        guard let last = reader.u64(), let count = reader.u8(), Int(count) <= maxRecoveryCodes else { return nil }
        factor.lastStep = last
        for _ in 0..<count {
            guard let digest = reader.raw(HMACSHA256.byteCount), let used = reader.bool() else { return nil }
            factor.recoveryCodes.append(RecoveryCode(digest: digest, used: used))
        }
        guard let windowStart = reader.u64(), let failures = reader.u8(), let locked = reader.u64() else { return nil }
        factor.failureWindowStartMillis = windowStart
        factor.failuresInWindow = failures
        factor.lockedUntilMillis = locked
        return factor
    }
}

/// Recovery codes: ten of ten base32 characters (50 random bits each), shown once as
/// `XXXXX-XXXXX` and stored as HMAC-SHA-256 under the pepper, bound to the user.
public enum RecoveryCodes {
    public static let count = 10
    static let characters = 10

    public static func generate() throws -> [String] {
        try (0..<count).map { _ in
            let text = String(Base32.encode(try SecureRandom.bytes(7)).prefix(characters))
            return String(text.prefix(5)) + "-" + String(text.suffix(5))
        }
    }

    /// The digest `code` is stored as, or nil when it is not shaped like a recovery code.
    public static func digest(_ code: String, user: CRMID, pepper: SymmetricKey) -> [UInt8]? {
        guard code.utf8.count <= 32 else { return nil }
        let normalised = code.uppercased().filter { $0 != "-" && $0 != " " }
        guard normalised.utf8.count == characters, normalised.utf8.allSatisfy(Base32.alphabet.contains) else {
            return nil
        }
        return HMACSHA256.authenticate(Array("crm.recovery.v1".utf8) + user.bytes + Array(normalised.utf8), key: pepper)
    }
}
