#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The key-encryption key at the top of the hierarchy. Data keys and the key ring's own state are
/// stored only in wrapped (sealed) form, produced and opened by a provider.
///
/// A provider may keep the master key in a local file (`FileMasterKeyProvider`) or delegate to a
/// KMS that never reveals it; callers only ever see wrapped bytes. Implementations must be
/// thread-safe.
public protocol MasterKeyProvider: Sendable {
    /// A stable, non-secret identifier of the master key, recorded with every wrapped secret so
    /// that a mismatched key is reported as such.
    var keyID: String { get }

    /// Seals `secret` so that only this master key can open it; `context` is bound as associated data.
    func wrap(_ secret: UnsafeRawBufferPointer, context: [UInt8]) throws -> [UInt8]

    /// Opens what `wrap` produced with the same `context`.
    func unwrap(_ wrapped: [UInt8], context: [UInt8]) throws -> [UInt8]
}

/// Why a master key could not be loaded or used.
public enum MasterKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    case fileUnreadable(path: String, reason: String)
    case permissionsTooOpen(path: String, mode: UInt32)
    case notARegularFile(path: String)
    case malformedKeyFile(path: String)
    case alreadyExists(path: String)
    /// The wrapped secret was made by another master key.
    case wrongMasterKey(expected: String, actual: String)
    case unwrapFailed(String)
    case wrapFailed(String)

    public var description: String {
        switch self {
        case .fileUnreadable(let path, let reason):
            return "cannot read master key file \(path): \(reason)"
        case .permissionsTooOpen(let path, let mode):
            let octal = String(mode & 0o777, radix: 8)
            return "master key file \(path) is readable or writable by group or others (mode \(octal)); "
                + "refusing to use it. Fix: chmod 600 \(path) (and make it owned by the node's user)"
        case .notARegularFile(let path):
            return "master key file \(path) is not a regular file"
        case .malformedKeyFile(let path):
            return "master key file \(path) must hold exactly 64 hexadecimal characters (32 bytes) and an "
                + "optional newline. Fix: create one with `openssl rand -hex 32 > \(path) && chmod 600 \(path)`"
        case .alreadyExists(let path):
            return "refusing to overwrite existing master key file \(path)"
        case .wrongMasterKey(let expected, let actual):
            return "this data was wrapped by master key \(expected), but the configured master key is \(actual). "
                + "Fix: configure the key file that holds \(expected) (after a master-key rotation, the new one)"
        case .unwrapFailed(let why):
            return "wrapped secret failed authentication under the master key: \(why)"
        case .wrapFailed(let why):
            return "wrapping under the master key failed: \(why)"
        }
    }
}

/// A master key kept in a local file of 64 hex characters, readable only by its owner.
///
/// Wrapped format: version (1) ‖ key id (8 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag (16), with
/// associated data "crm.wrap.v1" ‖ key id ‖ context.
public final class FileMasterKeyProvider: MasterKeyProvider {
    static let wrapVersion: UInt8 = 1
    static let keyIDByteCount = 8
    static let maxFileBytes = 4096

    public let path: String
    public let keyID: String
    private let keyIDBytes: [UInt8]
    private let cipher: AES256GCM

    /// Loads the key, refusing files that group or others may read or write.
    public init(path: String) throws {
        self.path = path
        var material = try Self.readKeyFile(path)
        defer { scrub(&material) }
        let key = SymmetricKey(copying: material)
        keyIDBytes = Array(
            HMACSHA256.authenticate(Array("crm.master-key-id.v1".utf8), key: key).prefix(Self.keyIDByteCount))
        keyID = "file:" + keyIDBytes.hexString
        cipher = AES256GCM(key: key)
    }

    /// Writes a fresh random key to `path` with mode 0600; never overwrites an existing file.
    @discardableResult
    public static func generateKeyFile(at path: String) throws -> FileMasterKeyProvider {
        var key: [UInt8]
        do { key = try SecureRandom.bytes(SymmetricKey.byteCount) } catch {
            throw MasterKeyError.wrapFailed("\(error)")
        }
        defer { scrub(&key) }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            if errno == EEXIST { throw MasterKeyError.alreadyExists(path: path) }
            throw MasterKeyError.fileUnreadable(path: path, reason: String(cString: strerror(errno)))
        }
        var text = key.hexDigits + [UInt8(ascii: "\n")]
        defer { scrub(&text) }
        let written = text.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == text.count, synced == 0 else {
            throw MasterKeyError.fileUnreadable(path: path, reason: "short write or fsync failure")
        }
        return try FileMasterKeyProvider(path: path)
    }

    public func wrap(_ secret: UnsafeRawBufferPointer, context: [UInt8]) throws -> [UInt8] {
        let prefixCount = 1 + Self.keyIDByteCount + AES256GCM.nonceByteCount
        var output = [UInt8](repeating: 0, count: prefixCount + secret.count + AES256GCM.tagByteCount)
        output[0] = Self.wrapVersion
        output.replaceSubrange(1..<(1 + Self.keyIDByteCount), with: keyIDBytes)
        let aad = associatedData(keyID: keyIDBytes, context: context)
        do {
            try output.withUnsafeMutableBytes { buffer in
                let nonce = UnsafeMutableRawBufferPointer(rebasing: buffer[(1 + Self.keyIDByteCount)..<prefixCount])
                try SecureRandom.fill(nonce)
                try aad.withUnsafeBytes { aadBytes in
                    try cipher.seal(
                        secret, nonce: UnsafeRawBufferPointer(nonce), associatedData: aadBytes,
                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[prefixCount...]))
                }
            }
        } catch {
            throw MasterKeyError.wrapFailed("\(error)")
        }
        return output
    }

    public func unwrap(_ wrapped: [UInt8], context: [UInt8]) throws -> [UInt8] {
        let prefixCount = 1 + Self.keyIDByteCount + AES256GCM.nonceByteCount
        guard wrapped.count >= prefixCount + AES256GCM.tagByteCount else {
            throw MasterKeyError.unwrapFailed("wrapped secret of \(wrapped.count) bytes is too short")
        }
        guard wrapped[0] == Self.wrapVersion else {
            throw MasterKeyError.unwrapFailed("unknown wrap version \(wrapped[0])")
        }
        let storedID = Array(wrapped[1..<(1 + Self.keyIDByteCount)])
        guard storedID == keyIDBytes else {
            throw MasterKeyError.wrongMasterKey(expected: "file:" + storedID.hexString, actual: keyID)
        }
        let aad = associatedData(keyID: storedID, context: context)
        var plain = [UInt8](repeating: 0, count: wrapped.count - prefixCount - AES256GCM.tagByteCount)
        let authentic: Bool
        do {
            authentic = try wrapped.withUnsafeBytes { (input) -> Bool in
                try aad.withUnsafeBytes { (aadBytes) -> Bool in
                    try plain.withUnsafeMutableBytes { (out) -> Bool in
                        try cipher.open(
                            UnsafeRawBufferPointer(rebasing: input[prefixCount...]),
                            nonce: UnsafeRawBufferPointer(rebasing: input[(1 + Self.keyIDByteCount)..<prefixCount]),
                            associatedData: aadBytes, into: out)
                    }
                }
            }
        } catch {
            throw MasterKeyError.unwrapFailed("\(error)")
        }
        guard authentic else {
            throw MasterKeyError.unwrapFailed("authentication failed (altered, or bound to another context)")
        }
        return plain
    }

    private func associatedData(keyID: [UInt8], context: [UInt8]) -> [UInt8] {
        Array("crm.wrap.v1".utf8) + keyID + context
    }

    /// The key's 32 bytes; the caller scrubs them.
    private static func readKeyFile(_ path: String) throws -> [UInt8] {
        var text: [UInt8]
        do {
            text = try SecretFile.read(path, maxBytes: maxFileBytes)
        } catch {
            switch error {
            case .notARegularFile: throw MasterKeyError.notARegularFile(path: path)
            case .tooOpen(_, let mode): throw MasterKeyError.permissionsTooOpen(path: path, mode: mode)
            case .tooLarge: throw MasterKeyError.malformedKeyFile(path: path)
            default: throw MasterKeyError.fileUnreadable(path: path, reason: error.description)
            }
        }
        defer { scrub(&text) }
        let count = text.count
        var digitCount = count
        if digitCount > 0, text[digitCount - 1] == UInt8(ascii: "\n") { digitCount -= 1 }
        guard digitCount == SymmetricKey.byteCount * 2 else { throw MasterKeyError.malformedKeyFile(path: path) }
        var digits = Array(text[0..<digitCount])
        defer { scrub(&digits) }
        guard let key = [UInt8](hexDigits: digits) else { throw MasterKeyError.malformedKeyFile(path: path) }
        return key
    }
}
