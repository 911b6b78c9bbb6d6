import CLibCrypto

/// HMAC-SHA-256 and SHA-256 through OpenSSL's libcrypto.
public enum HMACSHA256 {
    public static let byteCount = 32

    public static func authenticate(_ message: UnsafeRawBufferPointer, key: SymmetricKey) -> [UInt8] {
        key.withUnsafeBytes { keyBytes in
            [UInt8](unsafeUninitializedCapacity: byteCount) { out, initialized in
                var length: UInt32 = 0
                let result = withNonNullBase(message) { base, count in
                    HMAC(
                        EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count), base, count,
                        out.baseAddress, &length)
                }
                precondition(result != nil && length == UInt32(byteCount), "HMAC-SHA-256 failed inside OpenSSL")
                initialized = byteCount
            }
        }
    }

    public static func authenticate(_ message: [UInt8], key: SymmetricKey) -> [UInt8] {
        message.withUnsafeBytes { authenticate($0, key: key) }
    }

    public static func sha256(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount) { out, initialized in
            var length: UInt32 = 0
            let ok = withNonNullBase(message) { base, count in
                EVP_Digest(base, count, out.baseAddress, &length, EVP_sha256(), nil)
            }
            precondition(ok == 1 && length == UInt32(byteCount), "SHA-256 failed inside OpenSSL")
            initialized = byteCount
        }
    }

    public static func sha256(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { sha256($0) }
    }
}

/// SHA-256 over data given in pieces (for digests of whole stores).
public final class SHA256Hasher {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            preconditionFailure("SHA-256 context failed inside OpenSSL")
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            let ok = withNonNullBase(buffer) { base, count in EVP_DigestUpdate(context, base, count) }
            precondition(ok == 1, "SHA-256 update failed inside OpenSSL")
        }
    }

    /// The digest; the hasher must not be used afterwards.
    public func finish() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: HMACSHA256.byteCount) { out, initialized in
            var length: UInt32 = 0
            precondition(
                EVP_DigestFinal_ex(context, out.baseAddress, &length) == 1 && length == UInt32(HMACSHA256.byteCount),
                "SHA-256 final failed inside OpenSSL")
            initialized = HMACSHA256.byteCount
        }
    }
}
