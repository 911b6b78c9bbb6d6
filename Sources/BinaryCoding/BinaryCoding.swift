/// Big-endian writer for the records and messages the node stores and sends.
public struct BinaryWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func u16(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    public mutating func u32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    public mutating func u64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// Bytes as they are, with no length (the last field of a record).
    public mutating func raw(_ value: [UInt8]) { bytes.append(contentsOf: value) }

    /// A 32-bit length, then the bytes.
    public mutating func blob(_ value: [UInt8]) {
        precondition(value.count <= Int(UInt32.max), "blob of \(value.count) bytes")
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// 0 for nil, or 1 and the blob.
    public mutating func optionalBlob(_ value: [UInt8]?) {
        guard let value else { return u8(0) }
        u8(1)
        blob(value)
    }

    /// A 32-bit count, then each id.
    public mutating func ids(_ values: [UInt64]) {
        precondition(values.count <= Int(UInt32.max))
        u32(UInt32(values.count))
        for value in values { u64(value) }
    }
}

/// Reads what `BinaryWriter` wrote. Every read checks what is left and returns nil rather than
/// trapping or reading past the end; lengths and counts are checked against their limit and
/// against the bytes that remain before anything is allocated.
public struct BinaryReader: Sendable {
    private let input: ArraySlice<UInt8>
    private var position: Int

    public init(_ input: ArraySlice<UInt8>) {
        self.input = input
        position = input.startIndex
    }

    public init(_ input: [UInt8]) { self.init(input[...]) }

    public var remaining: Int { input.endIndex - position }
    public var isAtEnd: Bool { position == input.endIndex }

    public mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return input[position]
    }

    public mutating func bool() -> Bool? {
        switch u8() {
        case 0?: return false
        case 1?: return true
        default: return nil
        }
    }

    public mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { position += 2 }
        return UInt16(input[position]) << 8 | UInt16(input[position + 1])
    }

    public mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { position += 4 }
        return input[position..<position + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    public mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { position += 8 }
        return input[position..<position + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Exactly `count` bytes (no length before them); nil past the end.
    public mutating func raw(_ count: Int) -> [UInt8]? {
        guard count >= 0, remaining >= count else { return nil }
        defer { position += count }
        return Array(input[position..<position + count])
    }

    /// Everything left.
    public mutating func rest() -> [UInt8] {
        defer { position = input.endIndex }
        return Array(input[position...])
    }

    /// A 32-bit length, then that many bytes; nil above `limit` or past the end.
    public mutating func blob(limit: Int = .max) -> [UInt8]? {
        guard let length = u32(), Int(length) <= limit, Int(length) <= remaining else { return nil }
        defer { position += Int(length) }
        return Array(input[position..<position + Int(length)])
    }

    /// A blob holding UTF-8 text; nil when it is not valid UTF-8 (replacing the bad bytes would
    /// decode to text that encodes to other bytes).
    public mutating func text(limit: Int = .max) -> String? {
        blob(limit: limit).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// `.some(nil)` for an absent value, `.some(bytes)` for a present one, nil when malformed.
    public mutating func optionalBlob(limit: Int = .max) -> [UInt8]?? {
        switch u8() {
        case 0?: return .some(nil)
        case 1?: return blob(limit: limit).map { .some($0) }
        default: return nil
        }
    }

    /// A 32-bit count (at most `limit`), then that many ids.
    public mutating func ids(limit: Int) -> [UInt64]? {
        guard let count = u32(), Int(count) <= limit, Int(count) * 8 <= remaining else { return nil }
        return (0..<Int(count)).map { _ in u64()! }
    }
}
