import BinaryCoding
import CRM
import Foundation
import KVStore
import Sealing

/// One user's sign-in history at `c/<workspace>/lh/<user>`, sealed as a whole under the key
/// set's secrets key (it holds addresses, user agents and places): the latest attempts, and what
/// the alerts compare a new sign-in with (devices, networks, countries, the last place).
public struct LoginHistory: Equatable, Sendable {
    public enum Outcome: UInt8, Sendable {
        case passwordAccepted = 0
        case passwordRefused = 1
        case secondFactorRefused = 2
        case signedIn = 3
        case refusedByConditions = 4

        public var name: String {
            switch self {
            case .passwordAccepted: "password accepted"
            case .passwordRefused: "password refused"
            case .secondFactorRefused: "second factor refused"
            case .signedIn: "signed in"
            case .refusedByConditions: "refused by a role's conditions"
            }
        }
    }

    public struct Attempt: Equatable, Sendable {
        public var atMillis: UInt64
        public var outcome: Outcome
        public var address: String?
        public var userAgent: String

        public init(atMillis: UInt64, outcome: Outcome, address: String?, userAgent: String) {
            self.atMillis = atMillis
            self.outcome = outcome
            self.address = address
            self.userAgent = userAgent
        }
    }

    public struct Network: Equatable, Sendable {
        public var source: AttemptSource
        public var lastMillis: UInt64
    }

    public struct Visit: Equatable, Sendable {
        public var atMillis: UInt64
        public var place: GeoTable.Place

        public init(atMillis: UInt64, place: GeoTable.Place) {
            self.atMillis = atMillis
            self.place = place
        }
    }

    /// Digests of the device tokens of the latest full sign-ins, newest last.
    public var devices: [[UInt8]] = []
    public var networks: [Network] = []
    public var countries: [String] = []
    public var lastVisit: Visit?
    public var attempts: [Attempt] = []

    public static let maxDevices = 20
    public static let maxNetworks = 50
    public static let networkMemoryMillis: UInt64 = 90 * 86_400_000
    public static let maxCountries = 16
    public static let maxAttempts = 32
    static let maxUserAgentBytes = 256

    public init() {}

    public var isEmpty: Bool { devices.isEmpty && networks.isEmpty && attempts.isEmpty }

    public func knows(device digest: [UInt8]?) -> Bool {
        guard let digest else { return false }
        return devices.contains { constantTimeEqual($0, digest) }
    }

    /// This history with `attempt` added (the oldest forgotten past the bound).
    public func adding(_ attempt: Attempt) -> LoginHistory {
        var next = self
        var kept = attempt
        kept.userAgent = String(decoding: Array(attempt.userAgent.utf8.prefix(Self.maxUserAgentBytes)), as: UTF8.self)
        next.attempts = Array((attempts + [kept]).suffix(Self.maxAttempts))
        return next
    }

    /// This history after a password was accepted from `source` at `visit`'s place (when known).
    public func visited(from source: AttemptSource, at visit: Visit?, now: UInt64) -> LoginHistory {
        var next = self
        next.networks.removeAll { $0.source == source || now >= $0.lastMillis &+ Self.networkMemoryMillis }
        if source.isNetwork { next.networks.append(Network(source: source, lastMillis: now)) }
        next.networks = Array(next.networks.suffix(Self.maxNetworks))
        if let visit {
            next.lastVisit = visit
            next.countries.removeAll { $0 == visit.place.country }
            next.countries = Array((next.countries + [visit.place.country]).suffix(Self.maxCountries))
        }
        return next
    }

    /// This history after a full sign-in from the device `digest` names.
    public func signedIn(device digest: [UInt8]) -> LoginHistory {
        var next = self
        next.devices.removeAll { $0 == digest }
        next.devices = Array((next.devices + [digest]).suffix(Self.maxDevices))
        return next
    }

    static let format: UInt8 = 1

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.format)
        writer.u8(UInt8(devices.count))
        for device in devices { writer.raw(device) }
        writer.u8(UInt8(networks.count))
        for network in networks {
            writer.blob(network.source.bytes)
            writer.u64(network.lastMillis)
        }
        writer.u8(UInt8(countries.count))
        for country in countries { writer.blob(Array(country.utf8)) }
        writer.bool(lastVisit != nil)
        if let lastVisit {
            writer.u64(lastVisit.atMillis)
            writer.blob(Array(lastVisit.place.country.utf8))
            writer.u64(lastVisit.place.latitude.bitPattern)
            writer.u64(lastVisit.place.longitude.bitPattern)
        }
        writer.u8(UInt8(attempts.count))
        for attempt in attempts {
            writer.u64(attempt.atMillis)
            writer.u8(attempt.outcome.rawValue)
            writer.optionalBlob(attempt.address.map { Array($0.utf8) })
            writer.blob(Array(attempt.userAgent.utf8))
        }
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let deviceCount = reader.u8(), Int(deviceCount) <= Self.maxDevices else {
            return nil
        }
        for _ in 0..<deviceCount {
            guard let device = reader.raw(HMACSHA256.byteCount) else { return nil }
            devices.append(device)
        }
        guard let networkCount = reader.u8(), Int(networkCount) <= Self.maxNetworks else { return nil }
        for _ in 0..<networkCount {
            guard let raw = reader.blob(limit: AttemptSource.maxBytes), let source = AttemptSource(bytes: raw),
                let last = reader.u64()
            else { return nil }
            networks.append(Network(source: source, lastMillis: last))
        }
        guard let countryCount = reader.u8(), Int(countryCount) <= Self.maxCountries else { return nil }
        for _ in 0..<countryCount {
            guard let country = reader.text(limit: 2) else { return nil }
            countries.append(country)
        }
        guard let hasVisit = reader.bool() else { return nil }
        if hasVisit {
            guard let at = reader.u64(), let country = reader.text(limit: 2), let latitude = reader.u64(),
                let longitude = reader.u64()
            else { return nil }
            lastVisit = Visit(
                atMillis: at,
                place: GeoTable.Place(
                    country: country, latitude: Double(bitPattern: latitude), longitude: Double(bitPattern: longitude)))
        }
        guard let attemptCount = reader.u8(), Int(attemptCount) <= Self.maxAttempts else { return nil }
        for _ in 0..<attemptCount {
            guard let at = reader.u64(), let outcome = reader.u8().flatMap(Outcome.init(rawValue:)),
                let address = reader.optionalBlob(limit: 64), let agent = reader.text(limit: Self.maxUserAgentBytes)
            else { return nil }
            attempts.append(
                Attempt(
                    atMillis: at, outcome: outcome, address: address.map { String(decoding: $0, as: UTF8.self) },
                    userAgent: agent))
        }
        guard reader.isAtEnd else { return nil }
    }
}

/// What a sign-in looks like from outside: where it comes from and on which device.
public struct SignInContext: Sendable {
    public var address: String?
    public var source: AttemptSource
    public var userAgent: String
    /// The digest of the device token the application presented (nil: none, or not one).
    public var device: [UInt8]?
    public var place: GeoTable.Place?

    public init(
        address: String?, source: AttemptSource, userAgent: String, device: [UInt8]?, place: GeoTable.Place?
    ) {
        self.address = address
        self.source = source
        self.userAgent = userAgent
        self.device = device
        self.place = place
    }
}

/// Alerts about sign-ins (design C20–C23): what makes a successful password worth telling the
/// user and the security administrators about.
public enum LoginSignals {
    /// Faster than this between two sign-ins' places is impossible travel (km/h).
    public static let impossibleSpeed = 1_000.0
    /// Failures just before a success that make it suspicious.
    public static let failuresBeforeSuccess: UInt32 = 3

    /// The alerts a password accepted in `context` raises against `history`: none for a first
    /// sign-in (nothing to compare with).
    public static func alerts(
        _ history: LoginHistory, _ context: SignInContext, failuresBefore: UInt32, now: UInt64
    ) -> [SecurityAlert.Kind] {
        var kinds: [SecurityAlert.Kind] = []
        if failuresBefore >= failuresBeforeSuccess { kinds.append(.successAfterFailures) }
        guard !history.isEmpty else { return kinds }
        if !history.devices.isEmpty, !history.knows(device: context.device) { kinds.append(.newDevice) }
        if context.source.isNetwork, !history.networks.isEmpty,
            !history.networks.contains(where: {
                $0.source == context.source && now < $0.lastMillis &+ LoginHistory.networkMemoryMillis
            })
        {
            kinds.append(.newNetwork)
        }
        guard let place = context.place else { return kinds }
        if !history.countries.isEmpty, !history.countries.contains(place.country) { kinds.append(.newCountry) }
        if let last = history.lastVisit, now > last.atMillis {
            let hours = Double(max(now - last.atMillis, 60_000)) / 3_600_000
            if last.place.kilometres(to: place) / hours > impossibleSpeed { kinds.append(.impossibleTravel) }
        }
        return kinds
    }
}

/// Device tokens: `crm_d_` and 43 characters of base64url (256 random bits), handed to the
/// application at sign-in to keep with the browser or device; only their digests are stored.
public enum DeviceTokens {
    public static let prefix = "crm_d_"

    public static func generate() throws -> String {
        prefix + (try SessionTokens.generate()).dropFirst(SessionTokens.prefix.count)
    }

    /// The digest of `token`, or nil for anything not shaped like a device token.
    public static func digest(_ token: String) -> [UInt8]? {
        guard token.hasPrefix(prefix) else { return nil }
        return SessionTokens.digest(SessionTokens.prefix + token.dropFirst(prefix.count))
            .map { _ in HMACSHA256.sha256(Array(token.utf8)) }
    }
}

/// Reads and writes the sign-in histories, sealed under the key set in use (and opened under
/// the one they were sealed with).
public struct LoginHistories: Sendable {
    public let directory: DirectoryChanges

    public init(directory: DirectoryChanges) { self.directory = directory }

    var workspace: UInt32 { directory.workspace }

    public func key(_ user: CRMID) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/lh/") + user.bytes }

    static func binding(workspace: UInt32, user: CRMID, version: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.blob(Array("crm.login-history.v1".utf8))
        writer.u32(workspace)
        writer.blob(user.bytes)
        writer.u64(version)
        return writer.bytes
    }

    /// The history of `user` and the version it was read at (an empty one and nil when none).
    public func read(_ user: CRMID) throws -> (history: LoginHistory, version: UInt64?) {
        guard let value = try directory.records.kv.crmValue(key(user)) else { return (LoginHistory(), nil) }
        var reader = BinaryReader(value.payload)
        guard reader.u8() == 1, let keyVersion = reader.u64(), let sealed = reader.blob(limit: 64 * 1024),
            reader.isAtEnd, let version = value.version
        else { throw RecordError.keys(.doesNotOpen("the sign-in history of user \(user)")) }
        let keys = try directory.records.keys.keySet(keyVersion)
        guard
            let opened = try Sealed.open(
                sealed, under: keys.key(.secrets),
                binding: Self.binding(workspace: workspace, user: user, version: keyVersion)),
            let history = LoginHistory(encoded: opened)
        else { throw RecordError.keys(.doesNotOpen("the sign-in history of user \(user)")) }
        return (history, version)
    }

    /// The condition and operation that replace the history read at `version` with `history`,
    /// sealed under the key set in use.
    public func write(_ history: LoginHistory, of user: CRMID, readAt version: UInt64?) throws -> Transaction {
        guard let keys = try directory.records.keys.inUse() else {
            throw RecordError.keys(.keyUnavailable("no key set yet"))
        }
        let sealed = try Sealed.seal(
            history.encoded, under: keys.key(.secrets),
            binding: Self.binding(workspace: workspace, user: user, version: keys.version))
        var writer = BinaryWriter()
        writer.u8(1)
        writer.u64(keys.version)
        writer.blob(sealed)
        let key = key(user)
        return Transaction(
            conditions: [version.map { .version(key: key, $0) } ?? .absent(key: key)],
            operations: [.putStamped(key: key, value: writer.bytes)])
    }
}
