import CLibCrypto

/// HMAC-SHA-1 through OpenSSL's libcrypto, for RFC 6238 one-time codes only: authenticator apps
/// compute HMAC-SHA-1, and HOTP's truncation keeps HMAC's security whatever the hash's
/// collision resistance.
public enum HMACSHA1 {
    public static let byteCount = 20

    /// The tag of `message` under `key` (any length; the second factor's secret is 20 bytes).
    public static func authenticate(_ message: [UInt8], key: [UInt8]) -> [UInt8] {
        key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                [UInt8](unsafeUninitializedCapacity: byteCount) { out, initialized in
                    var length: UInt32 = 0
                    let result = withNonNullBase(messageBytes) { base, count in
                        withNonNullBase(keyBytes) { keyBase, keyCount in
                            HMAC(EVP_sha1(), keyBase, Int32(keyCount), base, count, out.baseAddress, &length)
                        }
                    }
                    precondition(result != nil && length == UInt32(byteCount), "HMAC-SHA-1 failed inside OpenSSL")
                    initialized = byteCount
                }
            }
        }
    }
}
