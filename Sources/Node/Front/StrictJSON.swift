import Foundation

/// A JSON value as the front's records routes accept it: integers only (money is in millionths),
/// objects without duplicate keys, strings of valid UTF-8.
enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    var kind: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A strict, bounded JSON parser (RFC 8259 and I-JSON): a duplicate key, a number with a
/// fraction or beyond 64 bits, invalid UTF-8, a lone surrogate, a control character in a
/// string, nesting deeper than `maxDepth`, or anything after the value is refused. Errors give
/// the byte offset and the rule, never the text.
struct StrictJSON {
    struct Failure: Error, CustomStringConvertible {
        let offset: Int
        let reason: String
        var description: String { "the body is not valid JSON at byte \(offset): \(reason)" }
    }

    static let maxDepth = 16

    private let bytes: [UInt8]
    private var position = 0

    static func parse(_ data: Data) throws -> JSONValue {
        var parser = StrictJSON(bytes: [UInt8](data))
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.position == parser.bytes.count else { throw parser.fail("something follows the value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func fail(_ reason: String) -> Failure { Failure(offset: position, reason: reason) }

    private mutating func skipSpace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    private mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nested deeper than \(Self.maxDepth) levels") }
        guard position < bytes.count else { throw fail("the body ends early") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .integer(try integer())
        default: throw fail("a value was expected")
        }
    }

    private mutating func literal(_ text: String, _ value: JSONValue) throws -> JSONValue {
        let expected = Array(text.utf8)
        guard bytes.count - position >= expected.count, Array(bytes[position..<(position + expected.count)]) == expected
        else { throw fail("a value was expected") }
        position += expected.count
        return value
    }

    private mutating func object(depth: Int) throws -> JSONValue {
        position += 1
        var members: [String: JSONValue] = [:]
        skipSpace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw fail("a key was expected")
            }
            let keyAt = position
            let key = try string()
            skipSpace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw fail("`:` was expected") }
            position += 1
            skipSpace()
            let value = try value(depth: depth + 1)
            guard members.updateValue(value, forKey: key) == nil else {
                throw Failure(offset: keyAt, reason: "a key appears twice in one object")
            }
            skipSpace()
            guard position < bytes.count else { throw fail("the body ends early") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                continue
            }
            guard bytes[position] == UInt8(ascii: "}") else { throw fail("`,` or `}` was expected") }
            position += 1
            return .object(members)
        }
    }

    private mutating func array(depth: Int) throws -> JSONValue {
        position += 1
        var items: [JSONValue] = []
        skipSpace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(items)
        }
        while true {
            skipSpace()
            items.append(try value(depth: depth + 1))
            skipSpace()
            guard position < bytes.count else { throw fail("the body ends early") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
                continue
            }
            guard bytes[position] == UInt8(ascii: "]") else { throw fail("`,` or `]` was expected") }
            position += 1
            return .array(items)
        }
    }

    private mutating func integer() throws -> Int64 {
        let start = position
        var negative = false
        if bytes[position] == UInt8(ascii: "-") {
            negative = true
            position += 1
        }
        var digits: [UInt8] = []
        while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
            digits.append(bytes[position] - UInt8(ascii: "0"))
            position += 1
            guard digits.count <= 20 else { throw Failure(offset: start, reason: "a number beyond 64 bits") }
        }
        guard !digits.isEmpty, digits.count == 1 || digits[0] != 0 else {
            throw Failure(offset: start, reason: "not a JSON number")
        }
        if position < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[position]) {
            throw Failure(offset: start, reason: "numbers are integers here (amounts are in millionths)")
        }
        var magnitude: UInt64 = 0
        for digit in digits {
            let (times, overflowA) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflowB) = times.addingReportingOverflow(UInt64(digit))
            guard !overflowA, !overflowB else { throw Failure(offset: start, reason: "a number beyond 64 bits") }
            magnitude = sum
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else {
                throw Failure(offset: start, reason: "a number beyond 64 bits")
            }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { throw Failure(offset: start, reason: "a number beyond 64 bits") }
        return Int64(magnitude)
    }

    private mutating func string() throws -> String {
        position += 1
        var out: [UInt8] = []
        while true {
            guard position < bytes.count else { throw fail("a string does not end") }
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: out, as: UTF8.self) else {
                    throw fail("a string is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"): try escape(into: &out)
            case 0..<0x20: throw fail("a control character in a string (escape it)")
            default: out.append(byte)
            }
        }
    }

    private mutating func escape(into out: inout [UInt8]) throws {
        guard position < bytes.count else { throw fail("a string does not end") }
        let byte = bytes[position]
        position += 1
        let simple: [UInt8: UInt8] = [
            UInt8(ascii: "\""): 0x22, UInt8(ascii: "\\"): 0x5C, UInt8(ascii: "/"): 0x2F, UInt8(ascii: "b"): 0x08,
            UInt8(ascii: "f"): 0x0C, UInt8(ascii: "n"): 0x0A, UInt8(ascii: "r"): 0x0D, UInt8(ascii: "t"): 0x09,
        ]
        if let plain = simple[byte] {
            out.append(plain)
            return
        }
        guard byte == UInt8(ascii: "u") else { throw fail("an unknown escape in a string") }
        var scalar = try hex4()
        if (0xD800...0xDBFF).contains(scalar) {
            guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"),
                bytes[position + 1] == UInt8(ascii: "u")
            else { throw fail("a lone surrogate in a string") }
            position += 2
            let low = try hex4()
            guard (0xDC00...0xDFFF).contains(low) else { throw fail("a lone surrogate in a string") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(scalar) {
            throw fail("a lone surrogate in a string")
        }
        out += Array(String(Character(Unicode.Scalar(scalar)!)).utf8)
    }

    private mutating func hex4() throws -> UInt32 {
        guard bytes.count - position >= 4 else { throw fail("a \\u escape needs four hexadecimal digits") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            position += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("a \\u escape needs four hexadecimal digits")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
