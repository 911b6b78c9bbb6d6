import AuditChain
import BinaryCoding
import KVStore

/// What the trail keeps: collectors (`crmctl audit pull`) acknowledge the entries they hold a
/// verified copy of at `<chain>-ack/<name>`, and pruning removes the oldest entries only below
/// every acknowledgement and below what checkpoints have checked, leaving the last removed
/// entry's number and hash at `<chain>-base` so that the rest still verifies from there.
public struct AuditRetention: Sendable {
    public let trail: AuditTrail

    /// Collectors that may acknowledge (each one bounds pruning, so a stray name is costly).
    public static let maxCollectors = 64
    /// Entries one pruning transaction removes at most (`TransactionLimits.maxRangeDeletions`).
    public static let maxPrunedPerCall = UInt64(TransactionLimits.maxRangeDeletions)

    public struct Acknowledgement: Equatable, Sendable {
        public var collector: String
        public var seq: UInt64
        public var hash: [UInt8]
        public var atMillis: UInt64
    }

    public init(trail: AuditTrail) { self.trail = trail }

    var baseKey: [UInt8] { trail.chain + Array("-base".utf8) }
    var collectorPrefix: [UInt8] { trail.chain + Array("-ack/".utf8) }
    func collectorKey(_ name: String) -> [UInt8] { collectorPrefix + Array(name.utf8) }

    /// 1 to 64 of a-z, 0-9, '-', '.', '_'.
    public static func isValidCollector(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy {
                (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || "-._".utf8.contains($0)
            }
    }

    /// The last entry pruned away (`AuditHead.empty`: none), and the version of that record.
    public func base() throws -> (head: AuditHead, version: UInt64?) {
        guard let value = try trail.kv.crmValue(baseKey) else { return (.empty, nil) }
        guard let head = AuditHead(encoded: value.payload) else {
            throw RecordError.keys(.doesNotOpen("the audit trail's base"))
        }
        return (head, value.version)
    }

    public func acknowledgement(_ collector: String) throws -> (ack: Acknowledgement, version: UInt64)? {
        guard let value = try trail.kv.crmValue(collectorKey(collector)), let version = value.version else {
            return nil
        }
        guard let head = AuditHead(encoded: value.payload) else {
            throw RecordError.keys(.doesNotOpen("an audit collector's acknowledgement"))
        }
        return (
            Acknowledgement(collector: collector, seq: head.seq, hash: head.hash, atMillis: value.updatedAtMillis),
            version
        )
    }

    public func collectors() throws -> [Acknowledgement] {
        let page = try trail.kv.crmScan(
            from: collectorPrefix, to: CRMLayout.end(of: collectorPrefix), limit: Self.maxCollectors + 1)
        return try page.entries.map { entry in
            guard let head = AuditHead(encoded: entry.value.payload) else {
                throw RecordError.keys(.doesNotOpen("an audit collector's acknowledgement"))
            }
            let name = String(decoding: entry.key.dropFirst(collectorPrefix.count), as: UTF8.self)
            return Acknowledgement(
                collector: name, seq: head.seq, hash: head.hash, atMillis: entry.value.updatedAtMillis)
        }
    }

    /// The transaction that records `collector` holding the chain up to `head`, written only
    /// if nobody moved the acknowledgement meanwhile (`version`: as read; nil: none yet).
    public func acknowledge(_ collector: String, _ head: AuditHead, readAt version: UInt64?) -> Transaction {
        precondition(Self.isValidCollector(collector), "a checked collector name")
        let key = collectorKey(collector)
        return Transaction(
            conditions: [version.map { .version(key: key, $0) } ?? .absent(key: key)],
            operations: [.putStamped(key: key, value: head.encoded)])
    }

    /// Entries before this one may be pruned now: those every collector holds and checkpoints
    /// have checked (the newest checked entry itself is kept). Nothing without a collector.
    public func allowedBelow() throws -> UInt64 {
        let acknowledged = try collectors().map(\.seq).min() ?? 0
        return min(acknowledged, try trail.checked())
    }

    /// What one pruning call removes, from the base on, below `requested` and `allowedBelow`,
    /// at most `maxPrunedPerCall` entries, with how far pruning may go now (`allowed`); nil when
    /// nothing may go.
    public func plan(
        below requested: UInt64
    ) throws -> (from: UInt64, to: UInt64, base: AuditHead, version: UInt64?, allowed: UInt64)? {
        let (base, version) = try base()
        let allowed = try allowedBelow()
        let end = min(requested, allowed)
        guard end > base.seq + 1 else { return nil }
        let to = min(end - 1, base.seq + Self.maxPrunedPerCall)
        assert(to > base.seq && to - base.seq <= Self.maxPrunedPerCall, "a bounded, non-empty range after the base")
        return (base.seq + 1, to, base, version, allowed)
    }

    /// The transaction that removes entries [from, to] (`newBase` is entry `to`) and appends
    /// `entry`, if the base is still as read.
    public func prune(
        from: UInt64, to newBase: AuditHead, baseVersion: UInt64?, entry: AuditEntry
    ) -> Transaction {
        precondition(from >= 1 && newBase.seq >= from, "a non-empty range")
        return Transaction(
            conditions: [
                baseVersion.map { .version(key: baseKey, $0) } ?? .absent(key: baseKey),
                .present(key: AuditChain.entryKey(trail.chain, newBase.seq)),
            ],
            operations: [
                .deleteRange(
                    from: AuditChain.entryKey(trail.chain, from), to: AuditChain.entryKey(trail.chain, newBase.seq + 1)),
                .putStamped(key: baseKey, value: newBase.encoded),
                trail.append(entry),
            ])
    }

    /// The stored hash of entry `seq` (nil: missing or not decodable).
    public func hash(of seq: UInt64) throws -> [UInt8]? {
        guard let found = try trail.links(from: seq, limit: 1).first, found.seq == seq else { return nil }
        return found.link?.hash
    }
}
