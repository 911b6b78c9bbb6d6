import CLibCrypto
import Synchronization

/// Cryptographically secure random bytes from OpenSSL's DRBG.
public enum SecureRandom {
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        guard buffer.count > 0 else { return }
        guard let base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self),
            RAND_bytes(base, Int32(buffer.count)) == 1
        else { throw SealingError.randomUnavailable }
    }

    public static func fill(_ bytes: inout [UInt8]) throws {
        try bytes.withUnsafeMutableBytes { buffer in try fill(buffer) }
    }

    public static func bytes(_ count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        try fill(&result)
        return result
    }

    /// Fills `buffer` (at most `NonceSource.blockBytes`) from a block of CSPRNG output drawn in
    /// advance. For public values such as nonces, where one RAND_bytes call per value (about a
    /// microsecond in OpenSSL 3) would dominate sealing a small value. Never use it for keys.
    public static func fillNonce(_ buffer: UnsafeMutableRawBufferPointer) throws {
        try NonceSource.shared.fill(buffer)
    }
}

/// Random bytes drawn from OpenSSL's DRBG 4 KiB at a time and handed out once each.
final class NonceSource: Sendable {
    static let blockBytes = 4096
    static let shared = NonceSource()

    private struct Block {
        var bytes = [UInt8](repeating: 0, count: NonceSource.blockBytes)
        var used = NonceSource.blockBytes
    }

    private let block = Mutex(Block())

    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        precondition(buffer.count <= Self.blockBytes, "nonce larger than the random block")
        try block.withLock { block in
            if block.used + buffer.count > block.bytes.count {
                try SecureRandom.fill(&block.bytes)
                block.used = 0
            }
            block.bytes.withUnsafeBytes { source in
                buffer.copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: source[block.used..<(block.used + buffer.count)]))
            }
            block.used += buffer.count
        }
    }
}
