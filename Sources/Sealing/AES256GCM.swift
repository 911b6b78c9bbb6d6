import CLibCrypto
import Synchronization

/// An AES-256-GCM key with pools of OpenSSL cipher contexts that already hold its key schedule.
///
/// Thread-safe: each operation takes a context from a pool (or makes one) and returns it after.
/// Nonces are supplied by the caller; `SealedValue` draws a fresh random one for every seal.
public final class AES256GCM: Sendable {
    public static let nonceByteCount = 12
    public static let tagByteCount = 16
    /// Idle contexts kept per direction; more are made on demand under contention and freed after.
    static let maxPooledContexts = 16

    public let key: SymmetricKey
    private let sealContexts = Mutex<[CipherContext]>([])
    private let openContexts = Mutex<[CipherContext]>([])

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
        let context = try take(from: sealContexts, encrypt: true)
        defer { give(context, to: sealContexts) }
        try context.seal(plaintext, nonce: nonce, associatedData: associatedData, into: output)
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
        let context = try take(from: openContexts, encrypt: false)
        defer { give(context, to: openContexts) }
        let authentic = try context.open(sealed, nonce: nonce, associatedData: associatedData, into: output)
        if !authentic, let base = output.baseAddress {
            OPENSSL_cleanse(base, output.count)
        }
        return authentic
    }

    private func take(from pool: borrowing Mutex<[CipherContext]>, encrypt: Bool) throws -> CipherContext {
        if let pooled = pool.withLock({ $0.popLast() }) { return pooled }
        return try CipherContext(key: key, encrypt: encrypt)
    }

    private func give(_ context: CipherContext, to pool: borrowing Mutex<[CipherContext]>) {
        pool.withLock { contexts in
            if contexts.count < Self.maxPooledContexts { contexts.append(context) }
        }
    }
}

/// One `EVP_CIPHER_CTX` initialised for AES-256-GCM with a key; used by one thread at a time.
final class CipherContext: @unchecked Sendable {
    private let context: OpaquePointer
    private let encrypt: Bool
    /// The tag parameter list (tag, end), reused by every operation on this context.
    private let tagParameters: UnsafeMutablePointer<OSSL_PARAM>

    init(key: SymmetricKey, encrypt: Bool) throws {
        guard let context = EVP_CIPHER_CTX_new() else { throw SealingError.cipherFailure("EVP_CIPHER_CTX_new") }
        self.context = context
        self.encrypt = encrypt
        tagParameters = .allocate(capacity: 2)
        tagParameters.initialize(repeating: OSSL_PARAM_construct_end(), count: 2)
        let ok = key.withUnsafeBytes { keyBytes -> Int32 in
            let keyPointer = keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            if encrypt {
                guard EVP_EncryptInit_ex(context, EVP_aes_256_gcm(), nil, nil, nil) == 1 else { return 0 }
                guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_IVLEN, Int32(AES256GCM.nonceByteCount), nil) == 1
                else { return 0 }
                return EVP_EncryptInit_ex(context, nil, nil, keyPointer, nil)
            } else {
                guard EVP_DecryptInit_ex(context, EVP_aes_256_gcm(), nil, nil, nil) == 1 else { return 0 }
                guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_IVLEN, Int32(AES256GCM.nonceByteCount), nil) == 1
                else { return 0 }
                return EVP_DecryptInit_ex(context, nil, nil, keyPointer, nil)
            }
        }
        guard ok == 1 else { throw SealingError.cipherFailure("EVP init of AES-256-GCM") }
    }

    deinit {
        EVP_CIPHER_CTX_free(context)
        tagParameters.deallocate()
    }

    // Both directions drive the AEAD through EVP_Cipher, which for GCM calls the provider
    // directly (AAD with out = nil, data, then a final call with in = nil that returns 0 when
    // the tag matches and -1 otherwise); EVP_EncryptUpdate/DecryptUpdate add about 0.1 µs of
    // checks per value, a quarter of the whole cost for a small record.

    func seal(
        _ plaintext: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        precondition(encrypt)
        let nonceBase = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_EncryptInit_ex(context, nil, nil, nil, nonceBase) == 1 else { throw SealingError.cipherFailure("set nonce") }
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
        guard exchangeTag(UnsafeMutableRawPointer(out + plaintext.count), get: true) else {
            throw SealingError.cipherFailure("get tag")
        }
    }

    /// Reads (after encryption) or sets (before decryption finishes) the 16-byte tag through the
    /// parameter interface directly; the older ctrl call converts to the same parameters, slower.
    private func exchangeTag(_ tag: UnsafeMutableRawPointer, get: Bool) -> Bool {
        tagParameters[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, AES256GCM.tagByteCount)
        return get ? EVP_CIPHER_CTX_get_params(context, tagParameters) == 1
            : EVP_CIPHER_CTX_set_params(context, tagParameters) == 1
    }

    func open(
        _ sealed: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws -> Bool {
        precondition(!encrypt)
        let nonceBase = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_DecryptInit_ex(context, nil, nil, nil, nonceBase) == 1 else { throw SealingError.cipherFailure("set nonce") }
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
        guard exchangeTag(UnsafeMutableRawPointer(mutating: input + cipherCount), get: false) else {
            throw SealingError.cipherFailure("set tag")
        }
        return EVP_Cipher(context, nil, nil, 0) == 0
    }
}
