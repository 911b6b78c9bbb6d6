import Foundation

/// A stored password hash, parsed with bounds: this cluster's Argon2id in PHC form, or a hash
/// imported from another system (passlib's PBKDF2 and scrypt, as Odoo stores them, and
/// Django's PBKDF2), verified once and replaced by Argon2id at the next login. Costs beyond
/// the bounds are refused, so that a hostile import cannot make a login hash for minutes.
public enum StoredPassword: Equatable, Sendable {
    case argon2id(Argon2Parameters, salt: [UInt8], tag: [UInt8])
    case pbkdf2(PBKDF2Digest, iterations: UInt32, salt: [UInt8], tag: [UInt8], django: Bool)
    /// scrypt with N = 2^logN.
    case scrypt(logN: UInt8, r: UInt32, p: UInt32, salt: [UInt8], tag: [UInt8])

    public enum PBKDF2Digest: String, Sendable { case sha256, sha512 }

    public static let maxEncodedBytes = 512
    static let maxPBKDF2Iterations: UInt32 = 2_000_000
    static let maxScryptLogN: UInt8 = 17
    static let maxScryptMemory: UInt64 = 128 << 20
    static let saltBytes = 4...64
    static let tagBytes = 16...64

    /// The PHC string this cluster stores: `$argon2id$v=19$m=…,t=…,p=…$<salt>$<tag>`, both in
    /// unpadded standard base64. Imported formats are written back as they came.
    public var encoded: String {
        switch self {
        case .argon2id(let parameters, let salt, let tag):
            return "$argon2id$v=19$m=\(parameters.memoryKiB),t=\(parameters.iterations),p=\(parameters.parallelism)$"
                + Base64Unpadded.encode(salt) + "$" + Base64Unpadded.encode(tag)
        case .pbkdf2(let digest, let iterations, let salt, let tag, let django):
            if django {
                return "pbkdf2_\(digest.rawValue)$\(iterations)$\(String(decoding: salt, as: UTF8.self))$"
                    + Data(tag).base64EncodedString()
            }
            return "$pbkdf2-\(digest.rawValue)$\(iterations)$" + Base64Unpadded.encode(salt, adapted: true) + "$"
                + Base64Unpadded.encode(tag, adapted: true)
        case .scrypt(let logN, let r, let p, let salt, let tag):
            return "$scrypt$ln=\(logN),r=\(r),p=\(p)$" + Base64Unpadded.encode(salt, adapted: true) + "$"
                + Base64Unpadded.encode(tag, adapted: true)
        }
    }

    /// The hash in `text`, or why it is not one this cluster verifies.
    public init(parsing text: String) throws {
        guard text.utf8.count <= Self.maxEncodedBytes, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw StoredPasswordError.malformed("not a printable hash of at most \(Self.maxEncodedBytes) bytes")
        }
        let parts = text.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 4, parts[0].hasPrefix("pbkdf2_") {
            self = try Self.django(parts)
            return
        }
        guard parts.count >= 5, parts[0].isEmpty else { throw StoredPasswordError.malformed("not a PHC string") }
        switch parts[1] {
        case "argon2id": self = try Self.argon2id(parts)
        case "pbkdf2-sha256", "pbkdf2-sha512": self = try Self.passlibPBKDF2(parts)
        case "scrypt": self = try Self.scrypt(parts)
        default: throw StoredPasswordError.unsupported(String(parts[1].prefix(32)))
        }
    }

    private static func argon2id(_ parts: [String]) throws -> StoredPassword {
        guard parts.count == 6, parts[2] == "v=19" else { throw StoredPasswordError.malformed("argon2id needs v=19") }
        let values = try keyValues(parts[3], ["m", "t", "p"])
        let parameters = Argon2Parameters(memoryKiB: values[0], iterations: values[1], parallelism: values[2])
        guard parameters.isWithinBounds else { throw StoredPasswordError.beyondBounds("argon2id cost") }
        return .argon2id(parameters, salt: try bytes(parts[4], saltBytes), tag: try bytes(parts[5], tagBytes))
    }

    private static func passlibPBKDF2(_ parts: [String]) throws -> StoredPassword {
        guard parts.count == 5, let iterations = UInt32(parts[2]), (1...maxPBKDF2Iterations).contains(iterations)
        else { throw StoredPasswordError.beyondBounds("pbkdf2 iterations") }
        return .pbkdf2(
            parts[1] == "pbkdf2-sha256" ? .sha256 : .sha512, iterations: iterations,
            salt: try bytes(parts[3], saltBytes, adapted: true), tag: try bytes(parts[4], tagBytes, adapted: true),
            django: false)
    }

    private static func django(_ parts: [String]) throws -> StoredPassword {
        guard let digest = PBKDF2Digest(rawValue: String(parts[0].dropFirst("pbkdf2_".count))) else {
            throw StoredPasswordError.unsupported(String(parts[0].prefix(32)))
        }
        guard let iterations = UInt32(parts[1]), (1...maxPBKDF2Iterations).contains(iterations) else {
            throw StoredPasswordError.beyondBounds("pbkdf2 iterations")
        }
        let salt = Array(parts[2].utf8)
        guard saltBytes.contains(salt.count), let tag = Data(base64Encoded: parts[3]), tagBytes.contains(tag.count)
        else { throw StoredPasswordError.malformed("a Django pbkdf2 hash's salt or hash") }
        return .pbkdf2(digest, iterations: iterations, salt: salt, tag: Array(tag), django: true)
    }

    private static func scrypt(_ parts: [String]) throws -> StoredPassword {
        guard parts.count == 5 else { throw StoredPasswordError.malformed("scrypt has five parts") }
        let values = try keyValues(parts[2], ["ln", "r", "p"])
        // Memory is 128·N·r bytes: at most 128 MiB.
        guard (1...UInt32(maxScryptLogN)).contains(values[0]), (1...16).contains(values[1]),
            (1...4).contains(values[2]),
            (UInt64(1) << values[0]) * UInt64(values[1]) * 128 <= maxScryptMemory
        else { throw StoredPasswordError.beyondBounds("scrypt cost") }
        return .scrypt(
            logN: UInt8(values[0]), r: values[1], p: values[2], salt: try bytes(parts[3], saltBytes, adapted: true),
            tag: try bytes(parts[4], tagBytes, adapted: true))
    }

    /// `k1=v1,k2=v2,…` with exactly `keys`, in order, as 32-bit numbers.
    private static func keyValues(_ text: String, _ keys: [String]) throws -> [UInt32] {
        let pairs = text.split(separator: ",", omittingEmptySubsequences: false)
        guard pairs.count == keys.count else { throw StoredPasswordError.malformed("parameters \(keys)") }
        return try zip(pairs, keys).map { pair, key in
            guard pair.hasPrefix(key + "="), let value = UInt32(pair.dropFirst(key.count + 1)) else {
                throw StoredPasswordError.malformed("parameter \(key)")
            }
            return value
        }
    }

    private static func bytes(_ text: String, _ range: ClosedRange<Int>, adapted: Bool = false) throws -> [UInt8] {
        guard let decoded = Base64Unpadded.decode(text, adapted: adapted), range.contains(decoded.count) else {
            throw StoredPasswordError.malformed("a salt or hash of \(range.lowerBound) to \(range.upperBound) bytes")
        }
        return decoded
    }
}

public enum StoredPasswordError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    case unsupported(String)
    case beyondBounds(String)

    public var description: String {
        switch self {
        case .malformed(let what): return "the password hash is malformed: \(what)"
        case .unsupported(let scheme): return "password hashes of scheme `\(scheme)` are not supported"
        case .beyondBounds(let what): return "the password hash's \(what) is beyond what this cluster verifies"
        }
    }
}

/// Argon2id's costs: memory in KiB, passes, lanes.
public struct Argon2Parameters: Equatable, Sendable {
    public var memoryKiB: UInt32
    public var iterations: UInt32
    public var parallelism: UInt32

    /// OWASP's first choice: m = 19 MiB, t = 2, p = 1.
    public static let standard = Argon2Parameters(memoryKiB: 19_456, iterations: 2, parallelism: 1)

    public init(memoryKiB: UInt32, iterations: UInt32, parallelism: UInt32) {
        self.memoryKiB = memoryKiB
        self.iterations = iterations
        self.parallelism = parallelism
    }

    /// At most 64 MiB, 10 passes and 4 lanes (and Argon2's own minimum of 8 KiB per lane).
    var isWithinBounds: Bool {
        (1...4).contains(parallelism) && (1...10).contains(iterations)
            && (8 * parallelism...65_536).contains(memoryKiB)
    }
}

/// Base64 without padding: the standard alphabet (PHC) or passlib's adapted one (`.` for `+`).
enum Base64Unpadded {
    static func encode(_ bytes: [UInt8], adapted: Bool = false) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return adapted ? text.replacingOccurrences(of: "+", with: ".") : text
    }

    static func decode(_ text: String, adapted: Bool = false) -> [UInt8]? {
        guard !text.contains("="), text.count % 4 != 1 else { return nil }
        if adapted && text.contains("+") { return nil }
        var padded = adapted ? text.replacingOccurrences(of: ".", with: "+") : text
        padded += String(repeating: "=", count: (4 - padded.count % 4) % 4)
        return Data(base64Encoded: padded).map(Array.init)
    }
}
