import CLibCrypto

/// A 256-bit secret key held in memory that is scrubbed (`OPENSSL_cleanse`) when the key is
/// freed; in the secure heap (locked, out of core dumps) once `SecureMemory.start` has run.
///
/// Immutable after creation, so it may be shared between threads.
public final class SymmetricKey: @unchecked Sendable {
    public static let byteCount = 32

    private let storage: UnsafeMutableRawBufferPointer

    /// Copies exactly `byteCount` bytes of key material.
    public init(copying bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == Self.byteCount, "a symmetric key is \(Self.byteCount) bytes, got \(bytes.count)")
        storage = SecureMemory.allocate(Self.byteCount)
        storage.copyMemory(from: bytes)
    }

    public convenience init(copying bytes: [UInt8]) {
        self.init(copying: bytes.withUnsafeBytes { $0 })
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
