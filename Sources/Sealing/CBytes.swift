/// Passes a non-null pointer to C even for an empty buffer (OpenSSL and LZ4 reject null).
@inline(__always)
func withNonNullBase<R>(
    _ buffer: UnsafeRawBufferPointer,
    _ body: (UnsafePointer<UInt8>, Int) throws -> R
) rethrows -> R {
    if let base = buffer.baseAddress {
        return try body(base.assumingMemoryBound(to: UInt8.self), buffer.count)
    }
    var zero: UInt8 = 0
    return try withUnsafePointer(to: &zero) { try body($0, 0) }
}

/// Byte arrays made from C output without paying for the generic array allocation path.
///
/// `[UInt8](unsafeUninitializedCapacity:)` looks up the array's type metadata at run time on
/// every call (about 60 ns for a 256-byte array here), while filling stack memory and copying it
/// with `Array(UnsafeRawBufferPointer)` takes about 35 ns; above a few KiB the copy costs more.
public enum ByteArray {
    /// Largest buffer taken from the stack; larger ones come from the heap.
    public static let maxStackBytes = 16 << 10

    /// Calls `body` with `byteCount` bytes of uninitialised scratch memory.
    public static func withScratch<R>(
        byteCount: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) rethrows -> R {
        if byteCount <= maxStackBytes {
            return try withUnsafeTemporaryAllocation(byteCount: byteCount, alignment: 16, body)
        }
        let heap = UnsafeMutableRawBufferPointer.allocate(byteCount: byteCount, alignment: 16)
        defer { heap.deallocate() }
        return try body(heap)
    }

    /// A new array of `count` bytes, every one of which `fill` must write.
    public static func make(count: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> [UInt8] {
        if count <= maxStackBytes {
            return try withUnsafeTemporaryAllocation(byteCount: count, alignment: 16) { scratch in
                try fill(scratch)
                return Array(UnsafeRawBufferPointer(scratch))
            }
        }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }
}

extension Array where Element == UInt8 {
    /// Lower-case hexadecimal, for logs and identifiers (never for secrets).
    public var hexString: String { String(decoding: hexDigits, as: UTF8.self) }

    /// Lower-case hexadecimal as bytes, for secrets that must not pass through a `String`.
    var hexDigits: [UInt8] {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return out
    }

    /// Parses lower- or upper-case hexadecimal; nil on any other character or an odd length.
    public init?(hexString: some StringProtocol) {
        self.init(hexDigits: Array(hexString.utf8))
    }

    /// Parses hexadecimal digits given as bytes (so secrets need not pass through a `String`).
    init?(hexDigits utf8: [UInt8]) {
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self = bytes
    }
}
