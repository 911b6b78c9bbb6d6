import CLibCrypto

/// Memory for key material outside the ordinary heap: OpenSSL's secure heap, a separate mapping
/// that is locked in RAM (never swapped), excluded from core dumps (MADV_DONTDUMP) and fenced
/// by guard pages. Keys allocated before `start`, or once it is full, come from the ordinary
/// heap (still scrubbed on free).
public enum SecureMemory {
    public enum Status: Equatable, Sendable {
        /// Mapped, locked and out of dumps.
        case locked
        /// Mapped and out of dumps, but not locked (RLIMIT_MEMLOCK too small): may be swapped.
        case unlocked
        case unavailable
    }

    /// Sets up the secure heap (once per process, before any key is made). `bytes` is rounded
    /// to a power of two by OpenSSL; allocations are at least 32 bytes.
    @discardableResult
    public static func start(bytes: Int = 256 << 10) -> Status {
        if CRYPTO_secure_malloc_initialized() == 1 { return .locked }
        switch CRYPTO_secure_malloc_init(bytes, 32) {
        case 1: return .locked
        case 2: return .unlocked
        default: return .unavailable
        }
    }

    /// Whether keys made now go to the secure heap.
    public static var isActive: Bool { CRYPTO_secure_malloc_initialized() == 1 }

    /// `count` bytes for secrets; freed with `free`.
    static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if isActive, let pointer = CRYPTO_secure_malloc(count, nil, 0) {
            return UnsafeMutableRawBufferPointer(start: pointer, count: count)
        }
        return .allocate(byteCount: count, alignment: 16)
    }

    /// Scrubs and frees memory from `allocate`.
    static func free(_ buffer: UnsafeMutableRawBufferPointer) {
        OPENSSL_cleanse(buffer.baseAddress, buffer.count)
        if let base = buffer.baseAddress, CRYPTO_secure_allocated(base) == 1 {
            CRYPTO_secure_clear_free(base, buffer.count, nil, 0)
        } else {
            buffer.deallocate()
        }
    }
}
