import BinaryCoding
import CRM
import KVStore
import Sealing

/// Where sign-in attempts come from: the end user's network (an IPv4 /24 or IPv6 /64) when the
/// application asserts the address, else the application itself.
public struct AttemptSource: Hashable, Sendable, CustomStringConvertible {
    /// `n` and the masked network's bytes, or `a` and the application's name.
    public let bytes: [UInt8]
    public var isNetwork: Bool { bytes.first == UInt8(ascii: "n") }

    static let maxBytes = 1 + 256

    init?(bytes: [UInt8]) {
        guard let first = bytes.first, [UInt8(ascii: "n"), UInt8(ascii: "a")].contains(first),
            bytes.count <= Self.maxBytes
        else { return nil }
        self.bytes = bytes
    }

    public static func of(address: String?, application: String) -> AttemptSource {
        if let address, let raw = IPRange.address(address) {
            let kept = raw.count == 4 ? 3 : 8
            return AttemptSource(
                bytes: [UInt8(ascii: "n")] + raw.prefix(kept) + [UInt8](repeating: 0, count: raw.count - kept))!
        }
        return AttemptSource(bytes: [UInt8(ascii: "a")] + Array(application.utf8.prefix(256)))!
    }

    public var description: String {
        guard isNetwork else { return String(decoding: bytes.dropFirst(), as: UTF8.self) }
        let raw = Array(bytes.dropFirst())
        if raw.count == 4 { return raw.prefix(3).map(String.init).joined(separator: ".") + ".0/24" }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(raw[$0]) << 8 | UInt16(raw[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
    }
}

/// The bounds of sign-in throttling (design C12, OWASP's account lockout guidance).
public struct ThrottlePolicy: Equatable, Sendable {
    /// Tier 1: failures for one account from one source, then a back-off doubling from 1 s.
    public var sourceFailures = 5
    public var sourceWindowMillis: UInt64 = 15 * 60_000
    public var sourceFirstBackoffMillis: UInt64 = 1_000
    public var sourceMaxBackoffMillis: UInt64 = 15 * 60_000
    /// Tier 2: failures for one account from anywhere, then a back-off doubling from 1 min.
    public var accountFailures = 20
    public var accountWindowMillis: UInt64 = 3_600_000
    public var accountFirstBackoffMillis: UInt64 = 60_000
    public var accountMaxBackoffMillis: UInt64 = 3_600_000
    /// Tier 3: consecutive failures that lock the account until a security administrator
    /// unlocks it (NIST SP 800-63B's limit).
    public var lockAfterFailures: UInt32 = 100
    /// Spraying: one network failing on this many accounts in the window is refused for a while.
    public var sprayAccounts = 10
    public var sprayWindowMillis: UInt64 = 10 * 60_000
    public var sprayBlockMillis: UInt64 = 15 * 60_000
    /// Sources remembered per account (the oldest is forgotten past this).
    public static let maxSourcesPerAccount = 16

    public init() {}

    static func backoff(level: UInt8, first: UInt64, max bound: UInt64) -> UInt64 {
        guard level > 0 else { return 0 }
        let shift = UInt64(min(Int(level) - 1, 40))
        return min(bound, first << shift)
    }
}

/// One account's failed sign-ins at `c/<workspace>/lk/<user>`: the times of the latest
/// failures per source and overall, the back-off levels and deadlines they set, the
/// consecutive count, and the hard lock. Removed by the next sign-in with the right password.
public struct AccountThrottle: Equatable, Sendable {
    public struct PerSource: Equatable, Sendable {
        public var source: AttemptSource
        public var failures: [UInt64] = []
        public var level: UInt8 = 0
        public var untilMillis: UInt64 = 0
    }

    public var consecutive: UInt32 = 0
    public var failures: [UInt64] = []
    public var level: UInt8 = 0
    public var untilMillis: UInt64 = 0
    public var locked = false
    public var sources: [PerSource] = []

    public init() {}

    /// When the next attempt from `source` may be made (nil: now), or `.max` while locked. A
    /// known device whose sign-in will need the second factor is not held by the account-wide
    /// back-off (tier 2), so that an attacker failing from everywhere does not lock its owner out.
    public func retryAt(from source: AttemptSource, now: UInt64, knownDevice: Bool = false) -> UInt64? {
        if locked { return .max }
        var until = knownDevice ? 0 : untilMillis
        if let mine = sources.first(where: { $0.source == source }) { until = max(until, mine.untilMillis) }
        return until > now ? until : nil
    }

    /// This state after a failure from `source` at `now`.
    public func failed(from source: AttemptSource, now: UInt64, policy: ThrottlePolicy) -> AccountThrottle {
        var next = self
        next.consecutive &+= 1
        if next.consecutive >= policy.lockAfterFailures { next.locked = true }
        next.failures = Self.kept(failures + [now], count: policy.accountFailures)
        if Self.full(next.failures, count: policy.accountFailures, window: policy.accountWindowMillis, now: now) {
            next.level = min(next.level &+ 1, 32)
            next.untilMillis =
                now
                &+ ThrottlePolicy.backoff(
                    level: next.level, first: policy.accountFirstBackoffMillis, max: policy.accountMaxBackoffMillis)
        }
        var mine = next.sources.first(where: { $0.source == source }) ?? PerSource(source: source)
        next.sources.removeAll { $0.source == source }
        mine.failures = Self.kept(mine.failures + [now], count: policy.sourceFailures)
        if Self.full(mine.failures, count: policy.sourceFailures, window: policy.sourceWindowMillis, now: now) {
            mine.level = min(mine.level &+ 1, 32)
            mine.untilMillis =
                now
                &+ ThrottlePolicy.backoff(
                    level: mine.level, first: policy.sourceFirstBackoffMillis, max: policy.sourceMaxBackoffMillis)
        }
        next.sources.append(mine)
        if next.sources.count > ThrottlePolicy.maxSourcesPerAccount { next.sources.removeFirst() }
        return next
    }

    static func kept(_ times: [UInt64], count: Int) -> [UInt64] { Array(times.suffix(count)) }

    static func full(_ times: [UInt64], count: Int, window: UInt64, now: UInt64) -> Bool {
        times.count >= count && now < times[times.count - count] &+ window
    }

    static let format: UInt8 = 1
    static let maxTimes = 128

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.format)
        writer.u32(consecutive)
        Self.write(failures, &writer)
        writer.u8(level)
        writer.u64(untilMillis)
        writer.bool(locked)
        writer.u8(UInt8(sources.count))
        for source in sources {
            writer.blob(source.source.bytes)
            Self.write(source.failures, &writer)
            writer.u8(source.level)
            writer.u64(source.untilMillis)
        }
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let consecutive = reader.u32(), let failures = Self.read(&reader),
            let level = reader.u8(), let until = reader.u64(), let locked = reader.bool(), let count = reader.u8(),
            Int(count) <= ThrottlePolicy.maxSourcesPerAccount
        else { return nil }
        self.consecutive = consecutive
        self.failures = failures
        self.level = level
        untilMillis = until
        self.locked = locked
        for _ in 0..<count {
            guard let raw = reader.blob(limit: AttemptSource.maxBytes), let source = AttemptSource(bytes: raw),
                let times = Self.read(&reader), let level = reader.u8(), let until = reader.u64()
            else { return nil }
            sources.append(PerSource(source: source, failures: times, level: level, untilMillis: until))
        }
        guard reader.isAtEnd else { return nil }
    }

    static func write(_ times: [UInt64], _ writer: inout BinaryWriter) {
        writer.u8(UInt8(times.count))
        for time in times { writer.u64(time) }
    }

    static func read(_ reader: inout BinaryReader) -> [UInt64]? {
        guard let count = reader.u8(), Int(count) <= maxTimes else { return nil }
        var times: [UInt64] = []
        for _ in 0..<count {
            guard let time = reader.u64() else { return nil }
            times.append(time)
        }
        return times
    }
}

/// One network's failed sign-ins across accounts at `c/<workspace>/ip/<source>` (password
/// spraying): keyed digests of the usernames it failed on lately, and how long it is refused.
public struct SourceThrottle: Equatable, Sendable {
    public var accounts: [(digest: [UInt8], atMillis: UInt64)] = []
    public var blockedUntilMillis: UInt64 = 0

    public init() {}

    public static func == (a: SourceThrottle, b: SourceThrottle) -> Bool {
        a.blockedUntilMillis == b.blockedUntilMillis && a.accounts.map(\.digest) == b.accounts.map(\.digest)
            && a.accounts.map(\.atMillis) == b.accounts.map(\.atMillis)
    }

    static let digestBytes = 8

    /// This state after a failure on the account `digest` names; blocked once `sprayAccounts`
    /// distinct accounts failed within the window.
    public func failed(account digest: [UInt8], now: UInt64, policy: ThrottlePolicy) -> SourceThrottle {
        var next = self
        next.accounts.removeAll { $0.digest == digest || now >= $0.atMillis &+ policy.sprayWindowMillis }
        next.accounts.append((digest, now))
        next.accounts = Array(next.accounts.suffix(policy.sprayAccounts))
        if next.accounts.count >= policy.sprayAccounts {
            next.blockedUntilMillis = now &+ policy.sprayBlockMillis
            next.accounts = []
        }
        return next
    }

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(1)
        writer.u64(blockedUntilMillis)
        writer.u8(UInt8(accounts.count))
        for account in accounts {
            writer.raw(account.digest)
            writer.u64(account.atMillis)
        }
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == 1, let until = reader.u64(), let count = reader.u8(), count <= 64 else { return nil }
        blockedUntilMillis = until
        for _ in 0..<count {
            guard let digest = reader.raw(Self.digestBytes), let at = reader.u64() else { return nil }
            accounts.append((digest, at))
        }
        guard reader.isAtEnd else { return nil }
    }
}

/// Reads and writes the throttles: what an attempt must wait for, and the transaction that
/// records a failure (conditioned on the versions read, so a concurrent one is not lost
/// silently: the proposer reads again and retries).
public struct SignInThrottles: Sendable {
    public let directory: DirectoryChanges
    public var policy = ThrottlePolicy()
    let pepper: SymmetricKey

    public init(directory: DirectoryChanges, pepper: SymmetricKey) {
        self.directory = directory
        self.pepper = pepper
    }

    var kv: ReplicatedKV { directory.records.kv }
    var workspace: UInt32 { directory.records.workspace }

    public func accountKey(_ user: CRMID) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/lk/") + user.bytes }
    public func sourceKey(_ source: AttemptSource) -> [UInt8] {
        CRMLayout.workspaceKey(workspace, "/ip/") + HMACSHA256.sha256(source.bytes)
    }

    public func account(_ user: CRMID) throws -> (AccountThrottle, UInt64)? {
        guard let value = try kv.crmValue(accountKey(user)) else { return nil }
        guard let state = AccountThrottle(encoded: value.payload), let version = value.version else {
            throw RecordError.keys(.doesNotOpen("the sign-in throttle of user \(user)"))
        }
        return (state, version)
    }

    public func source(_ source: AttemptSource) throws -> (SourceThrottle, UInt64)? {
        guard source.isNetwork, let value = try kv.crmValue(sourceKey(source)) else { return nil }
        guard let state = SourceThrottle(encoded: value.payload), let version = value.version else {
            throw RecordError.keys(.doesNotOpen("a sign-in throttle"))
        }
        return (state, version)
    }

    /// Why an attempt is refused before any password is checked: the time it may be made again
    /// (`.max`: locked until unlocked), or nil when it may be made now.
    public func retryAt(
        user: CRMID?, source: AttemptSource, now: UInt64, knownDevice: Bool = false
    ) throws -> UInt64? {
        var until: UInt64?
        if let (blocked, _) = try self.source(source), blocked.blockedUntilMillis > now {
            until = blocked.blockedUntilMillis
        }
        if let user, let (state, _) = try account(user),
            let at = state.retryAt(from: source, now: now, knownDevice: knownDevice)
        {
            until = max(until ?? 0, at)
        }
        return until
    }

    /// The transaction recording a failed password for `username` (the user when one exists),
    /// and whether it locked the account for good.
    public func failure(
        username: String, user: CRMID?, source: AttemptSource, now: UInt64
    ) throws -> (transaction: Transaction, locked: Bool, sprayBlocked: Bool) {
        var transaction = Transaction(operations: [])
        var locked = false
        var sprayBlocked = false
        if let user {
            let key = accountKey(user)
            let found = try account(user)
            let next = (found?.0 ?? AccountThrottle()).failed(from: source, now: now, policy: policy)
            locked = next.locked && found?.0.locked != true
            transaction.conditions.append(found.map { .version(key: key, $0.1) } ?? .absent(key: key))
            transaction.operations.append(.putStamped(key: key, value: next.encoded))
        }
        if source.isNetwork {
            let key = sourceKey(source)
            let found = try self.source(source)
            let digest = Array(
                HMACSHA256.authenticate(Array("crm.spray.v1".utf8) + Array(username.lowercased().utf8), key: pepper)
                    .prefix(SourceThrottle.digestBytes))
            let next = (found?.0 ?? SourceThrottle()).failed(account: digest, now: now, policy: policy)
            sprayBlocked = next.blockedUntilMillis > (found?.0.blockedUntilMillis ?? 0)
            transaction.conditions.append(found.map { .version(key: key, $0.1) } ?? .absent(key: key))
            transaction.operations.append(.putStamped(key: key, value: next.encoded))
        }
        return (transaction, locked, sprayBlocked)
    }

    /// The operation that forgets an account's failures (its right password, or an unlock).
    public func cleared(_ user: CRMID) -> TransactionOperation { .delete(key: accountKey(user)) }
}
