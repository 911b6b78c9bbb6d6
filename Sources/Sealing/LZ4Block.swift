import CLZ4

/// LZ4 block compression. The caller records the uncompressed length (the block format does not).
public enum LZ4Block {
    /// Largest input LZ4 accepts (`LZ4_MAX_INPUT_SIZE`).
    public static let maxInputBytes = 0x7E00_0000

    /// Worst-case compressed size of `count` input bytes.
    public static func bound(_ count: Int) -> Int {
        precondition(count >= 0 && count <= maxInputBytes)
        return Int(LZ4_compressBound(Int32(count)))
    }

    /// Compresses into `output`; returns the compressed length, or nil if it does not fit.
    public static func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        precondition(input.count <= maxInputBytes)
        guard input.count > 0, output.count > 0 else { return nil }
        let written = LZ4_compress_default(
            input.baseAddress!.assumingMemoryBound(to: CChar.self),
            output.baseAddress!.assumingMemoryBound(to: CChar.self),
            Int32(input.count), Int32(min(output.count, Int(Int32.max))))
        return written > 0 ? Int(written) : nil
    }

    /// Decompresses exactly `originalCount` bytes; nil if the block is malformed or of another length.
    public static func decompress(_ input: UnsafeRawBufferPointer, originalCount: Int) -> [UInt8]? {
        guard originalCount >= 0, originalCount <= maxInputBytes, input.count > 0 else { return nil }
        var ok = false
        let output = [UInt8](unsafeUninitializedCapacity: originalCount) { out, initialized in
            let produced = LZ4_decompress_safe(
                input.baseAddress!.assumingMemoryBound(to: CChar.self),
                UnsafeMutableRawPointer(out.baseAddress)?.assumingMemoryBound(to: CChar.self),
                Int32(input.count), Int32(originalCount))
            ok = produced == Int32(originalCount)
            initialized = ok ? originalCount : 0
        }
        return ok ? output : nil
    }
}
