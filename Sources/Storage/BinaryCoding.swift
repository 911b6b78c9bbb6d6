/// Big-endian binary encoding for the engine's own metadata records.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }

    mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func u64(_ value: UInt64) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func lengthPrefixed(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func u32Array(_ values: [UInt32]) {
        u32(UInt32(values.count))
        values.forEach { u32($0) }
    }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked and throws on short input.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0
    private let what: String

    init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, bytes.count - offset >= count else {
            throw StorageError.keyRingCorrupt("\(what): record ends early at byte \(offset)")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func u8() throws -> UInt8 { try take(1).first! }

    mutating func u32() throws -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func u64() throws -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func lengthPrefixed(maximum: Int) throws -> [UInt8] {
        let count = Int(try u32())
        guard count <= maximum else { throw StorageError.keyRingCorrupt("\(what): length \(count) over \(maximum)") }
        return Array(try take(count))
    }

    mutating func u32Array(maximum: Int) throws -> [UInt32] {
        let count = Int(try u32())
        guard count <= maximum else { throw StorageError.keyRingCorrupt("\(what): \(count) ids over \(maximum)") }
        return try (0..<count).map { _ in try u32() }
    }

    func expectEnd() throws {
        guard offset == bytes.count else {
            throw StorageError.keyRingCorrupt("\(what): \(bytes.count - offset) unexpected trailing bytes")
        }
    }
}

/// Helpers for building ordered keys.
public enum KeyEncoding {
    /// 8 bytes, big-endian, so that byte order equals numeric order (Raft log indexes).
    public static func bigEndian(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    public static func bigEndian(_ value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    /// The smallest key greater than every key that starts with `prefix` (nil if none exists).
    public static func prefixEnd(_ prefix: [UInt8]) -> [UInt8]? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }
}
