import CLibCrypto

/// A 256-bit secret key held in memory that is scrubbed (`OPENSSL_cleanse`) when the key is
/// freed; in the secure heap (locked, out of core dumps) once `SecureMemory.start` has run.
///
/// Immutable after creation, so it may be shared between threads.
public final class SymmetricKey: @unchecked Sendable {
    public static let byteCount = 32

    private let storage: UnsafeMutableRawBufferPointer

    /// Secure storage for one key, filled in by the public initialisers.
    private init(allocating: Void) {
        storage = SecureMemory.allocate(Self.byteCount)
    }

    /// Copies exactly `byteCount` bytes of key material.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == Self.byteCount, "a symmetric key is \(Self.byteCount) bytes, got \(bytes.count)")
        self.init(allocating: ())
        storage.copyMemory(from: bytes)
    }

    /// Copies exactly `byteCount` bytes of key material. The bytes are copied inside the array's
    /// `withUnsafeBytes`: a pointer taken out of it may point at freed memory.
    public convenience init(copying bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "a symmetric key is \(Self.byteCount) bytes, got \(bytes.count)")
        self.init(allocating: ())
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
    }

    /// A fresh key from OpenSSL's CSPRNG.
    public static func generate() throws -> SymmetricKey {
        var material = [UInt8](repeating: 0, count: byteCount)
        defer { material.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) } }
        try SecureRandom.fill(&material)
        return SymmetricKey(copying: material)
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(storage))
    }

    deinit {
        SecureMemory.free(storage)
    }
}

/// Scrubs a byte array that held secret material.
public func scrub(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) }
}
