import AuditChain
import BinaryCoding
import KVStore

/// A record as the transaction workload stores it: a token that must be unique among records
/// (as an e-mail's lookup token is among users), and the version its last write was stamped with.
public struct RecordState: Equatable, Sendable {
    public var token: Int
    public var version: UInt64
}

/// The simulator's transaction workload, a small model of CRM records: record `r/<id>` holds
/// its token; the unique index `u/<token>` names the record holding it; the listing index
/// `t/<token>/<id>` has one entry per record. Every change keeps all three in step in one
/// transaction, guarded by conditions, so after any step on any member:
/// - every record has its unique and its listing entry, and every index entry its record;
/// - no token is held by two records (the unique entry can name only one of them);
/// - each change appends its audit entry (chain `a`) in the same transaction: the chain is
///   numbered without a gap, every entry links to the one before and hashes to what it names,
///   and the head is the last entry.
public enum RecordOperation: Equatable, Sendable, CustomStringConvertible {
    case create(id: Int, token: Int)
    /// Moves a record from token `from` to `to`, if it still has `version`.
    case retoken(id: Int, from: Int, to: Int, version: UInt64)
    case remove(id: Int, token: Int, version: UInt64)
    case read(id: Int)

    public var id: Int {
        switch self {
        case .create(let id, _), .retoken(let id, _, _, _), .remove(let id, _, _), .read(let id): return id
        }
    }

    public var description: String {
        switch self {
        case .create(let id, let token): return "create(r\(id), token \(token))"
        case .retoken(let id, let from, let to, let version): return "retoken(r\(id) v\(version), \(from) -> \(to))"
        case .remove(let id, let token, let version): return "remove(r\(id) v\(version), token \(token))"
        case .read(let id): return "read(r\(id))"
        }
    }

    /// The transaction a member proposes for it, with its audit entry (nil for a read).
    var transaction: Transaction? {
        guard var transaction = change else { return nil }
        transaction.operations.append(.appendAudit(chain: RecordKeys.audit, body: Array(description.utf8)))
        return transaction
    }

    private var change: Transaction? {
        switch self {
        case .create(let id, let token):
            return Transaction(
                conditions: [.absent(key: RecordKeys.record(id)), .absent(key: RecordKeys.unique(token))],
                operations: [
                    .putStamped(key: RecordKeys.record(id), value: RecordKeys.text(token)),
                    .put(key: RecordKeys.unique(token), value: RecordKeys.text(id)),
                    .put(key: RecordKeys.listing(token, id), value: []),
                ])
        case .retoken(let id, let from, let to, let version):
            return Transaction(
                conditions: [.version(key: RecordKeys.record(id), version), .absent(key: RecordKeys.unique(to))],
                operations: [
                    .putStamped(key: RecordKeys.record(id), value: RecordKeys.text(to)),
                    .delete(key: RecordKeys.unique(from)),
                    .put(key: RecordKeys.unique(to), value: RecordKeys.text(id)),
                    .delete(key: RecordKeys.listing(from, id)),
                    .put(key: RecordKeys.listing(to, id), value: []),
                ])
        case .remove(let id, let token, let version):
            let listing = RecordKeys.listing(token, id)
            return Transaction(
                conditions: [.version(key: RecordKeys.record(id), version)],
                operations: [
                    .delete(key: RecordKeys.record(id)),
                    .delete(key: RecordKeys.unique(token)),
                    .deleteRange(from: listing, to: listing + [0]),
                ])
        case .read:
            return nil
        }
    }
}

enum RecordKeys {
    static let records = Array("r/".utf8)
    static let uniques = Array("u/".utf8)
    static let listings = Array("t/".utf8)
    static let audit = Array("a".utf8)

    static func record(_ id: Int) -> [UInt8] { records + text(id) }
    static func unique(_ token: Int) -> [UInt8] { uniques + text(token) }
    static func listing(_ token: Int, _ id: Int) -> [UInt8] { listings + text(token) + Array("/".utf8) + text(id) }
    static func text(_ number: Int) -> [UInt8] { Array(String(number).utf8) }

    static func number(_ bytes: some Sequence<UInt8>) -> Int? { Int(String(decoding: Array(bytes), as: UTF8.self)) }

    /// A prefix's whole range: up to the prefix with its last byte one higher (every prefix
    /// here ends in `/`).
    static func range(_ prefix: [UInt8]) -> (from: [UInt8], to: [UInt8]) {
        precondition(prefix.last == UInt8(ascii: "/"), "workload prefixes end in /")
        return (prefix, prefix.dropLast() + [UInt8(ascii: "/") + 1])
    }
}

/// Checks the records' invariants on one member's state.
enum RecordInvariants {
    static func check(_ kv: ReplicatedKV, node: UInt64) throws {
        let records = try scan(kv, RecordKeys.records)
        let uniques = try scan(kv, RecordKeys.uniques)
        let listings = try scan(kv, RecordKeys.listings)
        func violation(_ detail: String) -> InvariantViolation {
            InvariantViolation(
                property: "record indexes", detail: "node \(node) at applied index \(kv.appliedIndex): \(detail)")
        }
        var tokenOf: [Int: Int] = [:]
        for (key, value) in records {
            guard let id = RecordKeys.number(key), let token = RecordKeys.number(value.payload), value.version != nil
            else { throw violation("record \(key) does not decode") }
            tokenOf[id] = token
        }
        var holder: [Int: Int] = [:]
        for (key, value) in uniques {
            guard let token = RecordKeys.number(key), let id = RecordKeys.number(value.payload) else {
                throw violation("unique entry \(key) does not decode")
            }
            guard tokenOf[id] == token else {
                throw violation(
                    "unique entry for token \(token) names r\(id), which holds \(tokenOf[id].map(String.init) ?? "nothing")"
                )
            }
            holder[token] = id
        }
        var listed = Set<[Int]>()
        for (key, _) in listings {
            let parts = key.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            guard parts.count == 2, let token = RecordKeys.number(parts[0]), let id = RecordKeys.number(parts[1]) else {
                throw violation("listing entry \(key) does not decode")
            }
            guard tokenOf[id] == token else { throw violation("listing entry \(token)/\(id) has no such record") }
            listed.insert([token, id])
        }
        for (id, token) in tokenOf.sorted(by: { $0.key < $1.key }) {
            guard holder[token] == id else {
                throw violation(
                    "r\(id) holds token \(token), whose unique entry names \(holder[token].map { "r\($0)" } ?? "nobody")"
                )
            }
            guard listed.contains([token, id]) else { throw violation("r\(id) has no listing entry") }
        }
        try checkAudit(kv, node: node)
    }

    /// The audit chain verifies from its first entry to its head.
    static func checkAudit(_ kv: ReplicatedKV, node: UInt64) throws {
        var verifier = AuditVerifier(after: .empty)
        for (key, value) in try scan(kv, AuditChain.entryPrefix(RecordKeys.audit)) {
            var reader = BinaryReader(key)
            guard let seq = reader.u64(), verifier.check(seq: seq, AuditLink(encoded: value.payload)) else { break }
        }
        let head = try kv.crmValue(AuditChain.headKey(RecordKeys.audit)).map { AuditHead(encoded: $0.payload) }
        guard let head = head ?? .empty else {
            throw InvariantViolation(property: "audit chain", detail: "node \(node): the head does not decode")
        }
        verifier.finish(at: head)
        if let (seq, why) = verifier.problem {
            throw InvariantViolation(
                property: "audit chain",
                detail: "node \(node) at applied index \(kv.appliedIndex), entry \(seq): \(why)")
        }
    }

    /// Every entry under a prefix, keys without it.
    private static func scan(_ kv: ReplicatedKV, _ prefix: [UInt8]) throws -> [([UInt8], CRMValue)] {
        var entries: [([UInt8], CRMValue)] = []
        var (from, to) = RecordKeys.range(prefix)
        while true {
            let page = try kv.crmScan(from: from, to: to, limit: 256)
            entries += page.entries.map { (Array($0.key.dropFirst(prefix.count)), $0.value) }
            guard page.more, let last = page.entries.last else { return entries }
            from = last.key + [0]
            to = RecordKeys.range(prefix).to
        }
    }
}
