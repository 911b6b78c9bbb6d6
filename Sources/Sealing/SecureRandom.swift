import CLibCrypto

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
}
