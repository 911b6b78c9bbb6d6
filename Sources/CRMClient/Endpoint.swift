import Foundation

/// A `host:port` a listener binds to or a peer is reached at.
public struct Endpoint: Codable, Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (IPv6 as `[::1]:7001`); nil if it is not one. Only the canonical
    /// spelling: a host name or IPv4 address of ASCII letters, digits, '.', '-' and '_', or an
    /// IPv6 address in brackets (hex digits, ':' and '.'); a port of plain decimal digits
    /// (0–65535, no sign, no leading zero), so that what parses prints back the same.
    public init?(_ text: String) {
        let host: Substring
        let port: Substring
        let bracketed = text.hasPrefix("[")
        if bracketed {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard (1...253).contains(host.utf8.count), !bracketed || host.contains(":"),
            host.utf8.allSatisfy({ bracketed ? Self.isIPv6Character($0) : Self.isNameCharacter($0) })
        else { return nil }
        guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy(Self.isDigit),
            port == "0" || !port.hasPrefix("0"), let number = Int(port), number <= 65535
        else { return nil }
        self.init(host: String(host), port: number)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    private static func isNameCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        default: return false
        }
    }

    private static func isIPv6Character(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"),
            UInt8(ascii: ":"), UInt8(ascii: "."):
            return true
        default: return false
        }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let endpoint = Endpoint(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not host:port"))
        }
        self = endpoint
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public var isWildcard: Bool { host == "0.0.0.0" || host == "::" }
}
