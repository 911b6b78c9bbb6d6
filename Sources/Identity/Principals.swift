import BinaryCoding
import CRM
import KVStore

/// An application or integration: a client certificate (`crm://client/<name>`) with a record of
/// what it may do, at `c/<workspace>/principal/<name>`. A user's rights through it are the
/// user's roles within its ceiling; a blocked or expired principal is refused before anything
/// else, and one without a record is unknown (refused).
public struct Principal: Equatable, Sendable {
    public var name: String
    /// Role names whose union bounds what any user may do through this application.
    public var ceiling: [String]
    /// Whether the application may assert the end user's address (a front-end server may; a
    /// script may not).
    public var mayAssertAddress = false
    /// Milliseconds since 1970 after which it is refused (nil: no expiry).
    public var expiresAtMillis: UInt64?
    public var blocked = false
    /// When it was last used (written at most once an hour).
    public var lastUsedMillis: UInt64 = 0

    public init(name: String, ceiling: [String]) {
        self.name = name
        self.ceiling = ceiling
    }

    static let format: UInt8 = 1
    static let maxCeiling = 32

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.format)
        writer.blob(Array(name.utf8))
        writer.u16(UInt16(ceiling.count))
        for role in ceiling { writer.blob(Array(role.utf8)) }
        writer.bool(mayAssertAddress)
        writer.bool(expiresAtMillis != nil)
        writer.u64(expiresAtMillis ?? 0)
        writer.bool(blocked)
        writer.u64(lastUsedMillis)
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let name = reader.text(limit: 128), let count = reader.u16(),
            count <= Self.maxCeiling
        else { return nil }
        var ceiling: [String] = []
        for _ in 0..<count {
            guard let role = reader.text(limit: CRMRole.maxNameBytes) else { return nil }
            ceiling.append(role)
        }
        guard let assert = reader.bool(), let expires = reader.bool(), let expiry = reader.u64(),
            let blocked = reader.bool(), let lastUsed = reader.u64(), reader.isAtEnd
        else { return nil }
        self.init(name: name, ceiling: ceiling)
        mayAssertAddress = assert
        expiresAtMillis = expires ? expiry : nil
        self.blocked = blocked
        lastUsedMillis = lastUsed
    }
}

public enum PrincipalRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case unknown, blocked, expired

    public var description: String {
        switch self {
        case .unknown: return "this application has no principal record; an administrator adds it (crmctl clients put)"
        case .blocked: return "this application is blocked"
        case .expired: return "this application's principal has expired"
        }
    }
}

/// The transactions that add, change, block and touch principals, and the check on each call.
public struct PrincipalChanges: Sendable {
    public let records: RecordChanges
    public static let touchEveryMillis: UInt64 = 3_600_000

    public init(records: RecordChanges) { self.records = records }

    public func key(_ name: String) -> [UInt8] {
        CRMLayout.workspaceKey(records.workspace, "/principal/") + Array(name.utf8)
    }

    public func read(_ name: String) throws -> (principal: Principal, version: UInt64)? {
        guard name.utf8.count <= 128, let value = try records.kv.crmValue(key(name)) else { return nil }
        guard let principal = Principal(encoded: value.payload), let version = value.version else {
            throw RecordError.keys(.doesNotOpen("the principal record of \(name)"))
        }
        return (principal, version)
    }

    /// Adds or replaces `principal` (conditioned on the version read; nil: it must be new).
    public func put(_ principal: Principal, replacing version: UInt64?) throws -> Transaction {
        guard PeerName.isValid(principal.name) else {
            throw RecordError.badRequest("a client name is 1 to 128 letters, digits, '.', '_' or '-'")
        }
        guard principal.ceiling.count <= Principal.maxCeiling, principal.ceiling.allSatisfy(CRMRole.isName) else {
            throw RecordError.badRequest("a ceiling names at most \(Principal.maxCeiling) roles by their names")
        }
        let key = key(principal.name)
        return Transaction(
            conditions: [version.map { .version(key: key, $0) } ?? .absent(key: key)],
            operations: [.putStamped(key: key, value: principal.encoded)])
    }

    /// The principal of the application `name`, if it may be used at `now`.
    public func check(_ name: String, now: UInt64) throws -> (principal: Principal, version: UInt64) {
        guard let found = try read(name) else { throw PrincipalRefusal.unknown }
        guard !found.principal.blocked else { throw PrincipalRefusal.blocked }
        if let expiry = found.principal.expiresAtMillis, now >= expiry { throw PrincipalRefusal.expired }
        return found
    }

    /// Records the use at `now` the first time and when the last one recorded is an hour old
    /// (nil: not yet).
    public func touch(_ found: (principal: Principal, version: UInt64), now: UInt64) throws -> Transaction? {
        let last = found.principal.lastUsedMillis
        guard last == 0 || now >= last &+ Self.touchEveryMillis else { return nil }
        var principal = found.principal
        principal.lastUsedMillis = now
        return try put(principal, replacing: found.version)
    }

    /// Every principal, by name (at most `limit`).
    public func list(limit: Int = 1000) throws -> [Principal] {
        let prefix = CRMLayout.workspaceKey(records.workspace, "/principal/")
        return try records.kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: limit).entries.compactMap {
            Principal(encoded: $0.value.payload)
        }
    }
}

/// Client names as certificates carry them (`crm://client/<name>`; the same rule as the
/// transport's `PeerIdentity.isValidClientName`).
enum PeerName {
    static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return (1...128).contains(bytes.count)
            && bytes.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || ".-_".utf8.contains($0)
            }
    }
}
