import BinaryCoding
import CRM
import KVStore
import Sealing

/// A security alert at `c/<workspace>/al/<time><order><random>`: what happened, to which user, through
/// which application. Kinds, ids and short texts only: the history it came from stays sealed.
public struct SecurityAlert: Equatable, Sendable {
    public enum Kind: UInt8, CaseIterable, Sendable {
        case newDevice = 1
        case newNetwork = 2
        case newCountry = 3
        case impossibleTravel = 4
        case successAfterFailures = 5
        case accountLocked = 6
        case secondFactorLocked = 7
        case exfiltration = 8
        case authAttack = 9
        case clientBlocked = 10

        public var name: String {
            switch self {
            case .newDevice: "new_device"
            case .newNetwork: "new_network"
            case .newCountry: "new_country"
            case .impossibleTravel: "impossible_travel"
            case .successAfterFailures: "success_after_failures"
            case .accountLocked: "account_locked"
            case .secondFactorLocked: "second_factor_locked"
            case .exfiltration: "exfiltration"
            case .authAttack: "auth_attack"
            case .clientBlocked: "client_blocked"
            }
        }
    }

    public var kind: Kind
    public var atMillis: UInt64
    public var user: CRMID?
    public var application: String
    public var detail: String

    static let maxTextBytes = 256

    public init(kind: Kind, atMillis: UInt64, user: CRMID?, application: String, detail: String = "") {
        self.kind = kind
        self.atMillis = atMillis
        self.user = user
        self.application = String(decoding: Array(application.utf8.prefix(Self.maxTextBytes)), as: UTF8.self)
        self.detail = String(decoding: Array(detail.utf8.prefix(Self.maxTextBytes)), as: UTF8.self)
    }

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(1)
        writer.u8(kind.rawValue)
        writer.u64(atMillis)
        writer.optionalBlob(user?.bytes)
        writer.blob(Array(application.utf8))
        writer.blob(Array(detail.utf8))
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == 1, let kind = reader.u8().flatMap(Kind.init(rawValue:)), let at = reader.u64(),
            let user = reader.optionalBlob(limit: CRMID.byteCount), let application = reader.text(limit: 512),
            let detail = reader.text(limit: 512), reader.isAtEnd
        else { return nil }
        self.kind = kind
        atMillis = at
        self.user = user.flatMap(CRMID.init(bytes:))
        guard user == nil || self.user != nil else { return nil }
        self.application = application
        self.detail = detail
    }
}

/// The alerts of a workspace, in the order they were raised (keys sort by time, then random).
public struct SecurityAlerts: Sendable {
    public let kv: ReplicatedKV
    public let workspace: UInt32

    public init(kv: ReplicatedKV, workspace: UInt32) {
        self.kv = kv
        self.workspace = workspace
    }

    var prefix: [UInt8] { CRMLayout.workspaceKey(workspace, "/al/") }

    /// The operation that stores `alert` under a fresh key: its time, then `order` (alerts
    /// raised together keep the order they were raised in), then random bytes.
    public func raise(_ alert: SecurityAlert, order: UInt8 = 0) throws -> TransactionOperation {
        var writer = BinaryWriter()
        writer.u64(alert.atMillis)
        writer.u8(order)
        writer.raw(try SecureRandom.bytes(7))
        return .putStamped(key: prefix + writer.bytes, value: alert.encoded)
    }

    /// A cursor: the key an alert is stored under, as text (empty: before the first).
    public struct Cursor: Equatable, Sendable {
        public var key: [UInt8]
        public var text: String { key.hexString }

        public init?(text: String) {
            guard !text.isEmpty else {
                key = []
                return
            }
            guard text.utf8.count == 32, let bytes = [UInt8](hexString: text) else { return nil }
            key = bytes
        }

        init(key: [UInt8]) { self.key = key }
    }

    /// Up to `limit` alerts after `cursor`, with the cursor of each.
    public func after(_ cursor: Cursor, limit: Int) throws -> [(cursor: Cursor, alert: SecurityAlert)] {
        let start = cursor.key.isEmpty ? prefix : prefix + cursor.key + [0]
        let page = try kv.crmScan(from: start, to: CRMLayout.end(of: prefix), limit: max(1, min(limit, 1_000)))
        return page.entries.compactMap { entry in
            guard let alert = SecurityAlert(encoded: entry.value.payload) else { return nil }
            return (Cursor(key: Array(entry.key.dropFirst(prefix.count))), alert)
        }
    }
}
