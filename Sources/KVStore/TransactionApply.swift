import AuditChain
import BinaryCoding
@_spi(Simulation) import Raft
import Storage

extension ReplicatedKV {
    /// Applies a transaction as entry `index`: its conditions are read first, then its
    /// operations are staged in order (a later one sees an earlier one's changes); only when
    /// every condition held and every range fitted its bound do the changes reach `pending`.
    func perform(_ transaction: Transaction, index: UInt64, into pending: inout PendingApply) throws -> KVOutcome {
        if let problem = transaction.problem { return .refused(problem) }
        for (number, condition) in transaction.conditions.enumerated() {
            if plantedBug == .transactionChecksOneCondition && number > 0 { break }
            let (holds, current) = try check(condition, pending)
            if !holds { return .transaction(.conditionFailed(condition: number, current: current)) }
        }
        var staged = StagedChanges()
        for operation in transaction.operations {
            switch operation {
            case .put(let key, let value):
                staged.set(
                    CRMKeys.absolute(key), CRMValue(version: nil, updatedAtMillis: 0, payload: value).stored)
            case .putStamped(let key, let value):
                let stamped = CRMValue(
                    version: index, updatedAtMillis: pending.position.logClockMillis, payload: value)
                staged.set(CRMKeys.absolute(key), stamped.stored)
            case .delete(let key):
                staged.set(CRMKeys.absolute(key), nil)
            case .putAtLogTime(let prefix, let suffix):
                var writer = BinaryWriter(capacity: prefix.count + 8 + suffix.count)
                writer.raw(prefix); writer.u64(pending.position.logClockMillis); writer.raw(suffix)
                staged.set(
                    CRMKeys.absolute(writer.bytes), CRMValue(version: nil, updatedAtMillis: 0, payload: []).stored)
            case .deleteRange(let from, let to):
                let range = KeyRange(from: CRMKeys.absolute(from), to: CRMKeys.absolute(to))
                guard let keys = try liveKeys(in: range, pending, staged, limit: TransactionLimits.maxRangeDeletions)
                else {
                    return .refused(
                        "a delete range of the transaction holds more than \(TransactionLimits.maxRangeDeletions) keys; nothing was applied"
                    )
                }
                for key in keys { staged.set(key, nil) }
            case .appendAudit(let chain, let body):
                let headKey = CRMKeys.absolute(AuditChain.headKey(chain))
                let head = try auditHead(headKey, pending, staged)
                let link = AuditLink.next(
                    after: head, logIndex: index, logTimeMillis: pending.position.logClockMillis, body: body)
                assert(link.seq == head.seq + 1 && link.prev == head.hash, "an entry follows the head")
                staged.set(
                    CRMKeys.absolute(AuditChain.entryKey(chain, link.seq)),
                    CRMValue(version: nil, updatedAtMillis: 0, payload: link.encoded).stored)
                staged.set(
                    headKey,
                    CRMValue(
                        version: index, updatedAtMillis: pending.position.logClockMillis, payload: link.head.encoded
                    )
                    .stored)
            case .checkAuditHead(let chain, let seq, let hash):
                let checkedKey = CRMKeys.absolute(AuditChain.checkedKey(chain))
                let from = try lastChecked(checkedKey, pending, staged)
                if let why = try auditDifference(chain, seq: seq, hash: hash, after: from, pending, staged) {
                    reportDivergence(seq: seq, why)
                }
                var writer = BinaryWriter(capacity: 8)
                writer.u64(max(from, seq))
                staged.set(checkedKey, CRMValue(version: nil, updatedAtMillis: 0, payload: writer.bytes).stored)
            }
        }
        for key in staged.order { pending.set(key, staged.values[key]!) }
        return .transaction(.applied(version: index))
    }

    /// Whether `condition` holds now, and the version it found.
    private func check(_ condition: TransactionCondition, _ pending: PendingApply) throws -> (Bool, UInt64?) {
        switch condition {
        case .absent(let key):
            let stored = try pending.read(CRMKeys.absolute(key), storage)
            return (stored == nil, try stored.flatMap { try CRMValue.decode($0, key: CRMKeys.absolute(key)).version })
        case .present(let key):
            return (try pending.read(CRMKeys.absolute(key), storage) != nil, nil)
        case .version(let key, let expected):
            let absolute = CRMKeys.absolute(key)
            let current = try pending.read(absolute, storage).flatMap { try CRMValue.decode($0, key: absolute).version }
            return (current == expected, current)
        case .keySet(let expected):
            let current = try keySetInUse(pending)
            return (current == expected, current)
        }
    }

    /// The head of the audit chain at `key` as this transaction sees it (its own appends first).
    private func auditHead(_ key: [UInt8], _ pending: PendingApply, _ staged: StagedChanges) throws -> AuditHead {
        let stored: [UInt8]?
        if let changed = staged.values[key] {
            stored = changed
        } else if plantedBug == .auditHeadBeforeBatch {
            stored = try storage.get(.stateMachine, key)
        } else {
            stored = try pending.read(key, storage)
        }
        guard let stored else { return .empty }
        guard let head = AuditHead(encoded: try CRMValue.decode(stored, key: key).payload) else {
            throw StorageError.corruption(family: .stateMachine, key: key, message: "an audit head does not decode")
        }
        return head
    }

    /// Entries a checkpoint re-hashes at most (older ones are left to the full verification).
    static let maxCheckedPerCheckpoint: UInt64 = 8192

    private func lastChecked(_ key: [UInt8], _ pending: PendingApply, _ staged: StagedChanges) throws -> UInt64 {
        guard let stored = try staged.values[key] ?? pending.read(key, storage) else { return 0 }
        var reader = BinaryReader(try CRMValue.decode(stored, key: key).payload)
        return reader.u64() ?? 0
    }

    /// How this member's chain differs from a checkpoint over (`seq`, `hash`): the entry at seq
    /// is missing or hashes otherwise, or an entry since the last check no longer hashes to
    /// what it says or links to the one before. Nil when it agrees. Reads only: every member
    /// applies the checkpoint the same way whatever it finds.
    private func auditDifference(
        _ chain: [UInt8], seq: UInt64, hash: [UInt8], after checked: UInt64, _ pending: PendingApply,
        _ staged: StagedChanges
    ) throws -> String? {
        guard seq > 0 else { return nil }
        let first = max(checked + 1, seq > Self.maxCheckedPerCheckpoint ? seq - Self.maxCheckedPerCheckpoint + 1 : 1)
        var previous: AuditLink?
        for number in min(first, seq)...seq {
            let key = CRMKeys.absolute(AuditChain.entryKey(chain, number))
            guard let stored = try staged.values[key] ?? pending.read(key, storage) else {
                return "entry \(number) is missing"
            }
            guard let link = AuditLink(encoded: try CRMValue.decode(stored, key: key).payload), link.seq == number
            else {
                return "entry \(number) does not decode"
            }
            guard link.computedHash == link.hash else { return "entry \(number) does not match its hash" }
            if let previous, link.prev != previous.hash {
                return "entry \(number) does not link to entry \(number - 1)"
            }
            previous = link
        }
        guard previous?.hash == hash else { return "entry \(seq) differs from the checkpoint's" }
        return nil
    }

    /// The version of the CRM key set in use (0: none yet).
    private func keySetInUse(_ pending: PendingApply) throws -> UInt64 {
        let key = CRMKeys.absolute(CRMKeys.keySetInUse)
        guard let stored = try pending.read(key, storage) else { return 0 }
        let value = try CRMValue.decode(stored, key: key)
        var reader = BinaryReader(value.payload)
        guard let version = reader.u64(), reader.isAtEnd else {
            throw StorageError.corruption(
                family: .stateMachine, key: key, message: "the CRM key-set version does not decode")
        }
        return version
    }

    /// The keys in `range` that hold a value once what is pending and staged is taken into
    /// account, in order; nil when there are more than `limit`.
    private func liveKeys(
        in range: KeyRange, _ pending: PendingApply, _ staged: StagedChanges, limit: Int
    ) throws -> [[UInt8]]? {
        var live = Set<[UInt8]>()
        var cursor: KeyRange? = range
        while let current = cursor {
            let page = try storage.scan(.stateMachine, current, limit: 1024)
            // Keys changed since the store was written are counted from the overlays below.
            for entry in page.entries where pending.overlay[entry.key] == nil && staged.values[entry.key] == nil {
                live.insert(entry.key)
                if live.count > limit { return nil }
            }
            cursor = page.resume
        }
        for (key, value) in pending.overlay where value != nil && staged.values[key] == nil && range.contains(key) {
            live.insert(key)
        }
        for (key, value) in staged.values where value != nil && range.contains(key) { live.insert(key) }
        guard live.count <= limit else { return nil }
        return live.sorted { $0.lexicographicallyPrecedes($1) }
    }
}

/// A transaction's changes before they are known to apply: the last value per key, and the
/// order in which keys were first touched.
private struct StagedChanges {
    var values: [[UInt8]: [UInt8]?] = [:]
    var order: [[UInt8]] = []

    mutating func set(_ key: [UInt8], _ value: [UInt8]?) {
        if values.updateValue(value, forKey: key) == nil { order.append(key) }
    }
}
