import CLibCrypto
import Synchronization

/// An AES-256-GCM key with pools of OpenSSL cipher contexts that already hold its key schedule.
///
/// Thread-safe: each operation takes a context from a pool (or makes one) and returns it after.
/// Nonces are supplied by the caller; `SealedValue` draws a fresh random one for every seal.
public final class AES256GCM: Sendable {
    public static let nonceByteCount = 12
    public static let tagByteCount = 16

    public let key: SymmetricKey
    /// Idle contexts per direction; more are made on demand under contention and freed after.
    private let sealContexts = CipherContext.makePool()
    private let openContexts = CipherContext.makePool()

    public init(key: SymmetricKey) {
        self.key = key
    }

    /// Encrypts `plaintext` into `output` (exactly `plaintext.count + tagByteCount` bytes: the
    /// ciphertext followed by the tag). `output` may start at `plaintext`'s address (in place).
    public func seal(
        _ plaintext: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        precondition(nonce.count == Self.nonceByteCount, "AES-GCM nonce must be 12 bytes")
        precondition(output.count == plaintext.count + Self.tagByteCount, "output must hold ciphertext and tag")
        guard plaintext.count <= Int(Int32.max) - 64 else {
            throw SealingError.inputTooLarge(bytes: plaintext.count, maximum: Int(Int32.max) - 64)
        }
        let context = try sealContexts.take().map(OpaquePointer.init) ?? CipherContext.make(key: key, encrypt: true)
        defer { sealContexts.give(UnsafeMutableRawPointer(context)) }
        try CipherContext.seal(context, plaintext, nonce: nonce, associatedData: associatedData, into: output)
    }

    /// Decrypts and authenticates `sealed` (ciphertext followed by tag) into `output`
    /// (exactly `sealed.count - tagByteCount` bytes). Returns false, with `output` zeroed,
    /// when authentication fails: nothing unauthenticated ever reaches the caller.
    public func open(
        _ sealed: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws -> Bool {
        precondition(nonce.count == Self.nonceByteCount, "AES-GCM nonce must be 12 bytes")
        precondition(sealed.count >= Self.tagByteCount, "sealed input shorter than the tag")
        precondition(output.count == sealed.count - Self.tagByteCount, "output must hold the plaintext")
        guard sealed.count <= Int(Int32.max) else {
            throw SealingError.inputTooLarge(bytes: sealed.count, maximum: Int(Int32.max))
        }
        let context = try openContexts.take().map(OpaquePointer.init) ?? CipherContext.make(key: key, encrypt: false)
        defer { openContexts.give(UnsafeMutableRawPointer(context)) }
        let authentic = try CipherContext.open(
            context, sealed, nonce: nonce, associatedData: associatedData, into: output)
        if !authentic, let base = output.baseAddress {
            OPENSSL_cleanse(base, output.count)
        }
        return authentic
    }
}

/// Operations on one `EVP_CIPHER_CTX` initialised for AES-256-GCM with a key; one thread at a time.
enum CipherContext {
    static func makePool() -> IdlePool {
        IdlePool(maxSpare: 16) { EVP_CIPHER_CTX_free(OpaquePointer($0)) }
    }

    static func make(key: SymmetricKey, encrypt: Bool) throws -> OpaquePointer {
        guard let context = EVP_CIPHER_CTX_new() else { throw SealingError.cipherFailure("EVP_CIPHER_CTX_new") }
        let ok = key.withUnsafeBytes { keyBytes -> Int32 in
            let keyPointer = keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            let enc: Int32 = encrypt ? 1 : 0
            guard EVP_CipherInit_ex(context, EVP_aes_256_gcm(), nil, nil, nil, enc) == 1 else { return 0 }
            guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_IVLEN, Int32(AES256GCM.nonceByteCount), nil) == 1
            else { return 0 }
            return EVP_CipherInit_ex(context, nil, nil, keyPointer, nil, enc)
        }
        guard ok == 1 else {
            EVP_CIPHER_CTX_free(context)
            throw SealingError.cipherFailure("EVP init of AES-256-GCM")
        }
        return context
    }

    // Both directions drive the AEAD through EVP_Cipher, which for GCM calls the provider
    // directly (AAD with out = nil, data, then a final call with in = nil that returns 0 when
    // the tag matches and -1 otherwise); EVP_EncryptUpdate/DecryptUpdate add about 0.1 µs of
    // checks per value, a quarter of the whole cost for a small record.

    static func seal(
        _ context: OpaquePointer,
        _ plaintext: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        assert(EVP_CIPHER_CTX_is_encrypting(context) == 1)
        let nonceBase = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_EncryptInit_ex(context, nil, nil, nil, nonceBase) == 1 else {
            throw SealingError.cipherFailure("set nonce")
        }
        if associatedData.count > 0 {
            let aad = associatedData.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_Cipher(context, nil, aad, UInt32(associatedData.count)) == Int32(associatedData.count)
            else { throw SealingError.cipherFailure("associated data") }
        }
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if plaintext.count > 0 {
            let input = plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_Cipher(context, out, input, UInt32(plaintext.count)) == Int32(plaintext.count)
            else { throw SealingError.cipherFailure("encrypt") }
        }
        guard EVP_Cipher(context, nil, nil, 0) == 0 else { throw SealingError.cipherFailure("finalise") }
        guard exchangeTag(context, UnsafeMutableRawPointer(out + plaintext.count), get: true) else {
            throw SealingError.cipherFailure("get tag")
        }
    }

    /// Reads (after encryption) or sets (before decryption finishes) the 16-byte tag through the
    /// parameter interface directly; the older ctrl call converts to the same parameters, slower.
    private static func exchangeTag(_ context: OpaquePointer, _ tag: UnsafeMutableRawPointer, get: Bool) -> Bool {
        var parameters = (crm_aead_tag_parameter(tag, AES256GCM.tagByteCount), OSSL_PARAM_construct_end())
        return withUnsafeMutablePointer(to: &parameters) { tuple in
            tuple.withMemoryRebound(to: OSSL_PARAM.self, capacity: 2) { list in
                get ? EVP_CIPHER_CTX_get_params(context, list) == 1 : EVP_CIPHER_CTX_set_params(context, list) == 1
            }
        }
    }

    static func open(
        _ context: OpaquePointer,
        _ sealed: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws -> Bool {
        assert(EVP_CIPHER_CTX_is_encrypting(context) == 0)
        let nonceBase = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_DecryptInit_ex(context, nil, nil, nil, nonceBase) == 1 else {
            throw SealingError.cipherFailure("set nonce")
        }
        if associatedData.count > 0 {
            let aad = associatedData.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_Cipher(context, nil, aad, UInt32(associatedData.count)) == Int32(associatedData.count)
            else { throw SealingError.cipherFailure("associated data") }
        }
        let cipherCount = sealed.count - AES256GCM.tagByteCount
        let input = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if cipherCount > 0 {
            let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_Cipher(context, out, input, UInt32(cipherCount)) == Int32(cipherCount)
            else { throw SealingError.cipherFailure("decrypt") }
        }
        guard exchangeTag(context, UnsafeMutableRawPointer(mutating: input + cipherCount), get: false) else {
            throw SealingError.cipherFailure("set tag")
        }
        return EVP_Cipher(context, nil, nil, 0) == 0
    }
}
