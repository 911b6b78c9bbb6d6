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

    init(key: SymmetricKey, encrypt: Bool) throws {
        guard let context = EVP_CIPHER_CTX_new() else { throw SealingError.cipherFailure("EVP_CIPHER_CTX_new") }
        self.context = context
        self.encrypt = encrypt
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
        guard ok == 1 else {
            EVP_CIPHER_CTX_free(context)
            throw SealingError.cipherFailure("EVP init of AES-256-GCM")
        }
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    func seal(
        _ plaintext: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        precondition(encrypt)
        let nonceBase = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_EncryptInit_ex(context, nil, nil, nil, nonceBase) == 1 else { throw SealingError.cipherFailure("set nonce") }
        var written: Int32 = 0
        if associatedData.count > 0 {
            let aad = associatedData.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_EncryptUpdate(context, nil, &written, aad, Int32(associatedData.count)) == 1
            else { throw SealingError.cipherFailure("associated data") }
        }
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var produced = 0
        if plaintext.count > 0 {
            let input = plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_EncryptUpdate(context, out, &written, input, Int32(plaintext.count)) == 1
            else { throw SealingError.cipherFailure("encrypt") }
            produced = Int(written)
        }
        guard EVP_EncryptFinal_ex(context, out + produced, &written) == 1 else { throw SealingError.cipherFailure("finalise") }
        produced += Int(written)
        precondition(produced == plaintext.count, "GCM is a stream mode: ciphertext length equals plaintext length")
        guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_GET_TAG, Int32(AES256GCM.tagByteCount), out + produced) == 1
        else { throw SealingError.cipherFailure("get tag") }
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
        var written: Int32 = 0
        if associatedData.count > 0 {
            let aad = associatedData.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_DecryptUpdate(context, nil, &written, aad, Int32(associatedData.count)) == 1
            else { throw SealingError.cipherFailure("associated data") }
        }
        let cipherCount = sealed.count - AES256GCM.tagByteCount
        let input = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var produced = 0
        if cipherCount > 0 {
            let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
            guard EVP_DecryptUpdate(context, out, &written, input, Int32(cipherCount)) == 1
            else { throw SealingError.cipherFailure("decrypt") }
            produced = Int(written)
        }
        let tag = UnsafeMutableRawPointer(mutating: input + cipherCount)
        guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_TAG, Int32(AES256GCM.tagByteCount), tag) == 1
        else { throw SealingError.cipherFailure("set tag") }
        var finalBytes: Int32 = 0
        var scratch: UInt8 = 0
        let finalPointer = output.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) + produced }
        let authentic = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
            EVP_DecryptFinal_ex(context, finalPointer ?? scratchPointer, &finalBytes) == 1
        }
        return authentic && produced + Int(finalBytes) == cipherCount
    }
}
