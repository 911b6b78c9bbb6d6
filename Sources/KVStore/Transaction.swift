import AuditChain
import BinaryCoding
import Storage

/// Limits on a CRM transaction, checked by the proposer before it proposes and again at apply
/// (a transaction that breaks one is refused whole).
public enum TransactionLimits {
    public static let maxConditions = 256
    public static let maxOperations = 512
    /// Keys and values of all conditions and operations together.
    public static let maxPayloadBytes = 1 << 20
    public static let maxKeyBytes = 1024
    /// Keys one `deleteRange` may remove; a range holding more fails the transaction.
    public static let maxRangeDeletions = 10_000
}

/// A condition that must hold, when the transaction is applied, for any of its operations to
/// take effect. Keys are relative to the CRM prefix.
public enum TransactionCondition: Equatable, Sendable {
    case absent(key: [UInt8])
    case present(key: [UInt8])
    /// The key holds a stamped value of exactly this version.
    case version(key: [UInt8], UInt64)
    /// The CRM key set in use is this version (0: none yet).
    case keySet(UInt64)

    var keys: [[UInt8]] {
        switch self {
        case .absent(let key), .present(let key), .version(let key, _): return [key]
        case .keySet: return []
        }
    }
}

/// One change of a transaction. Keys are relative to the CRM prefix.
public enum TransactionOperation: Equatable, Sendable {
    case put(key: [UInt8], value: [UInt8])
    /// Stores the value with the transaction's version (its log index) and the log time.
    case putStamped(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    /// Deletes every key in [from, to); at most `TransactionLimits.maxRangeDeletions`.
    case deleteRange(from: [UInt8], to: [UInt8])
    /// Puts an empty value at `prefix` ‖ the log time (8 bytes, big-endian) ‖ `suffix`: an index
    /// entry ordered by the time the transaction's stamped values carry.
    case putAtLogTime(prefix: [UInt8], suffix: [UInt8])
    /// Appends an entry with `body` to the audit chain at `chain` (see `AuditChain`): the apply
    /// numbers it, stamps it with the log index and time, and links it to the head.
    case appendAudit(chain: [UInt8], body: [UInt8])
    /// A checkpoint's check: the entry `seq` of the chain must hash to `hash` here, and every
    /// entry since the last check must still hash to what it says. Changes nothing but the
    /// chain's last checked seq (the same on every member); a member that finds its own entries
    /// differ reports it (TAMPER), since its chain is no longer the cluster's.
    case checkAuditHead(chain: [UInt8], seq: UInt64, hash: [UInt8])

    var keys: [[UInt8]] {
        switch self {
        case .put(let key, _), .putStamped(let key, _), .delete(let key): return [key]
        case .deleteRange(let from, let to): return [from, to]
        case .putAtLogTime(let prefix, let suffix): return [prefix + [UInt8](repeating: 0, count: 8) + suffix]
        case .appendAudit(let chain, _): return [AuditChain.headKey(chain), AuditChain.entryKey(chain, 0)]
        case .checkAuditHead(let chain, _, _): return [AuditChain.checkedKey(chain)]
        }
    }

    var payloadBytes: Int {
        switch self {
        case .put(let key, let value), .putStamped(let key, let value): return key.count + value.count
        case .delete(let key): return key.count
        case .deleteRange(let from, let to): return from.count + to.count
        case .putAtLogTime(let prefix, let suffix): return prefix.count + 8 + suffix.count
        case .appendAudit(let chain, let body): return chain.count + body.count
        case .checkAuditHead(let chain, _, let hash): return chain.count + 8 + hash.count
        }
    }
}

/// An atomic multi-key write to the CRM state: every condition holds and every operation is
/// applied, or nothing is. Made whole by the proposer (ids, nonces, ciphertexts, lookup tokens);
/// the apply adds only the log index (the version) and the log time.
public struct Transaction: Equatable, Sendable {
    public var conditions: [TransactionCondition]
    public var operations: [TransactionOperation]

    public init(conditions: [TransactionCondition] = [], operations: [TransactionOperation]) {
        self.conditions = conditions
        self.operations = operations
    }

    /// Why the transaction is refused, or nil.
    public var problem: String? {
        guard !operations.isEmpty else { return "a transaction has at least one operation" }
        guard operations.count <= TransactionLimits.maxOperations else {
            return
                "a transaction has at most \(TransactionLimits.maxOperations) operations; this one has \(operations.count)"
        }
        guard conditions.count <= TransactionLimits.maxConditions else {
            return
                "a transaction has at most \(TransactionLimits.maxConditions) conditions; this one has \(conditions.count)"
        }
        for key in conditions.flatMap(\.keys) + operations.flatMap(\.keys) {
            guard !key.isEmpty, key.count <= TransactionLimits.maxKeyBytes else {
                return "transaction keys are 1 to \(TransactionLimits.maxKeyBytes) bytes; one has \(key.count)"
            }
        }
        for case .deleteRange(let from, let to) in operations where !from.lexicographicallyPrecedes(to) {
            return "a delete range ends after it starts"
        }
        for case .appendAudit(_, let body) in operations where body.count > AuditChain.maxBodyBytes {
            return "an audit entry is at most \(AuditChain.maxBodyBytes) bytes; one has \(body.count)"
        }
        for case .checkAuditHead(_, _, let hash) in operations where hash.count != 32 {
            return "an audit head's hash is 32 bytes; one has \(hash.count)"
        }
        let payload = payloadBytes
        guard payload <= TransactionLimits.maxPayloadBytes else {
            return
                "a transaction carries at most \(TransactionLimits.maxPayloadBytes) bytes of keys and values; this one \(payload)"
        }
        return nil
    }

    var payloadBytes: Int {
        conditions.reduce(0) { $0 + $1.keys.reduce(0) { $0 + $1.count } }
            + operations.reduce(0) { $0 + $1.payloadBytes }
    }

    /// The longest encoding a transaction within the limits can have.
    static let maxEncodedBytes =
        TransactionLimits.maxPayloadBytes + 4 + TransactionLimits.maxConditions * 13
        + TransactionLimits.maxOperations * 9

    func write(into writer: inout BinaryWriter) {
        writer.u16(UInt16(conditions.count))
        for condition in conditions {
            switch condition {
            case .absent(let key): writer.u8(1); writer.blob(key)
            case .present(let key): writer.u8(2); writer.blob(key)
            case .version(let key, let version): writer.u8(3); writer.blob(key); writer.u64(version)
            case .keySet(let version): writer.u8(4); writer.u64(version)
            }
        }
        writer.u16(UInt16(operations.count))
        for operation in operations {
            switch operation {
            case .put(let key, let value): writer.u8(1); writer.blob(key); writer.blob(value)
            case .putStamped(let key, let value): writer.u8(2); writer.blob(key); writer.blob(value)
            case .delete(let key): writer.u8(3); writer.blob(key)
            case .deleteRange(let from, let to): writer.u8(4); writer.blob(from); writer.blob(to)
            case .putAtLogTime(let prefix, let suffix): writer.u8(5); writer.blob(prefix); writer.blob(suffix)
            case .appendAudit(let chain, let body): writer.u8(6); writer.blob(chain); writer.blob(body)
            case .checkAuditHead(let chain, let seq, let hash):
                writer.u8(7); writer.blob(chain); writer.u64(seq); writer.raw(hash)
            }
        }
    }

    /// Decodes a transaction, refusing counts and sizes beyond the limits (a damaged or hostile
    /// entry cannot make the reader allocate more than the limits allow).
    /// Whether the transaction extends an audit chain (a later command kind than plain ones).
    public var appendsAudit: Bool {
        operations.contains { if case .appendAudit = $0 { true } else { false } }
    }

    /// Whether the transaction checks an audit chain's head (a checkpoint: a later kind still).
    public var checksAudit: Bool {
        operations.contains { if case .checkAuditHead = $0 { true } else { false } }
    }

    /// The command kind that carries this transaction: the lowest that has its operations.
    public var commandKind: UInt8 {
        checksAudit ? KVCommand.checkpointTransactionKind : appendsAudit ? KVCommand.auditedTransactionKind : 5
    }

    init?(reading reader: inout BinaryReader, auditAllowed: Bool, checkAllowed: Bool = false) {
        let keyLimit = TransactionLimits.maxKeyBytes
        let valueLimit = TransactionLimits.maxPayloadBytes
        guard let conditionCount = reader.u16(), conditionCount <= TransactionLimits.maxConditions else { return nil }
        var conditions: [TransactionCondition] = []
        for _ in 0..<conditionCount {
            switch reader.u8() {
            case 1?:
                guard let key = reader.blob(limit: keyLimit) else { return nil }
                conditions.append(.absent(key: key))
            case 2?:
                guard let key = reader.blob(limit: keyLimit) else { return nil }
                conditions.append(.present(key: key))
            case 3?:
                guard let key = reader.blob(limit: keyLimit), let version = reader.u64() else { return nil }
                conditions.append(.version(key: key, version))
            case 4?:
                guard let version = reader.u64() else { return nil }
                conditions.append(.keySet(version))
            default:
                return nil
            }
        }
        guard let operationCount = reader.u16(), operationCount <= TransactionLimits.maxOperations else { return nil }
        var operations: [TransactionOperation] = []
        for _ in 0..<operationCount {
            let kind = reader.u8()
            guard let key = reader.blob(limit: keyLimit) else { return nil }
            switch kind {
            case 1?, 2?:
                guard let value = reader.blob(limit: valueLimit) else { return nil }
                operations.append(kind == 1 ? .put(key: key, value: value) : .putStamped(key: key, value: value))
            case 3?:
                operations.append(.delete(key: key))
            case 4?:
                guard let to = reader.blob(limit: keyLimit) else { return nil }
                operations.append(.deleteRange(from: key, to: to))
            case 5?:
                guard let suffix = reader.blob(limit: keyLimit) else { return nil }
                operations.append(.putAtLogTime(prefix: key, suffix: suffix))
            case 6? where auditAllowed:
                guard let body = reader.blob(limit: AuditChain.maxBodyBytes) else { return nil }
                operations.append(.appendAudit(chain: key, body: body))
            case 7? where checkAllowed:
                guard let seq = reader.u64(), let hash = reader.raw(32) else { return nil }
                operations.append(.checkAuditHead(chain: key, seq: seq, hash: hash))
            default:
                return nil
            }
        }
        self.init(conditions: conditions, operations: operations)
    }
}
