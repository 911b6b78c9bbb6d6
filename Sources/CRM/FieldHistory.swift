import BinaryCoding
import KVStore
import Sealing

/// One field's change: its value before and after (nil: absent).
public struct FieldChange: Equatable, Sendable {
    public var field: UInt16
    public var old: FieldValue?
    public var new: FieldValue?

    public init(field: UInt16, old: FieldValue?, new: FieldValue?) {
        self.field = field
        self.old = old
        self.new = new
    }
}

/// Who changed a record, and when.
public struct HistoryStamp: Equatable, Sendable {
    public var actor: String
    public var atMillis: UInt64

    public init(actor: String, atMillis: UInt64) {
        self.actor = actor
        self.atMillis = atMillis
    }
}

/// One change of a record's tracked fields.
public struct HistoryEntry: Equatable, Sendable {
    public var record: CRMID
    public var stamp: HistoryStamp
    public var changes: [FieldChange]
}

/// Field history at `c/<workspace>/h/<record id><time (8, big-endian)><random (4)>`: each change
/// of a record's personal fields and of its tracked ones (a deal's stage and amount, custom
/// fields put with `track_history`), with the old and new values, who and when. A row of a record with a data subject is
/// sealed as a whole under the subject's key (erasing the subject erases its history wherever
/// copied); others are stored plain (they hold no personal data). Rows older than the retention
/// (`crm.history_retention_days`, 548) are removed by the leader's sweep.
public struct FieldHistory: Sendable {
    public let kv: ReplicatedKV
    public let workspace: UInt32

    public static let defaultRetentionDays = 548
    /// Rows one read answers at most.
    public static let maxRead = 1000
    static let format: UInt8 = 1

    public init(kv: ReplicatedKV, workspace: UInt32 = CRMLayout.defaultWorkspace) {
        self.kv = kv
        self.workspace = workspace
    }

    /// Whether changes of `field` are kept: personal fields always, others when their
    /// definition says so (a deal's stage and amount; custom fields put with `track_history`).
    public static func tracks(_ field: FieldDefinition) -> Bool { field.personal || field.tracked }

    var prefix: [UInt8] { CRMLayout.workspaceKey(workspace, "/h/") }
    func prefix(of record: CRMID) -> [UInt8] { prefix + record.bytes }

    /// The operation that keeps `changes` of `record` (sealed under `subjectKey` when given).
    public func row(
        _ record: CRMID, _ stamp: HistoryStamp, _ changes: [FieldChange], subjectKey: SymmetricKey?
    ) throws -> TransactionOperation {
        precondition(!changes.isEmpty, "a history row holds at least one change")
        var key = BinaryWriter()
        key.raw(prefix(of: record))
        key.u64(stamp.atMillis)
        var nonce = [UInt8](repeating: 0, count: 4)
        try SecureRandom.fill(&nonce)
        key.raw(nonce)
        let body = Self.body(stamp, changes)
        var value = BinaryWriter()
        value.u8(Self.format)
        if let subjectKey {
            value.u8(1)
            value.raw(try Sealed.seal(body, under: subjectKey, binding: binding(key.bytes)))
        } else {
            value.u8(0)
            value.raw(body)
        }
        return .put(key: key.bytes, value: value.bytes)
    }

    /// The newest rows of `record` first, at most `limit`; a sealed row opens with `subjectKey`
    /// (nil: the subject's key is gone, and so is its history).
    public func entries(of record: CRMID, subjectKey: SymmetricKey?, limit: Int) throws -> [HistoryEntry] {
        let start = prefix(of: record)
        var rows: [(key: [UInt8], value: CRMValue)] = []
        var from = start
        // Oldest first in the store: read them all (bounded by the retention) and keep the newest.
        for _ in 0..<10_000 {
            let page = try kv.crmScan(from: from, to: CRMLayout.end(of: start), limit: 1000)
            rows += page.entries
            if rows.count > limit { rows.removeFirst(rows.count - limit) }
            guard page.more, let last = page.entries.last else { break }
            from = last.key + [0]
        }
        return try rows.reversed().compactMap { row in
            try entry(record, key: row.key, payload: row.value.payload, subjectKey: subjectKey)
        }
    }

    private func entry(
        _ record: CRMID, key: [UInt8], payload: [UInt8], subjectKey: SymmetricKey?
    ) throws
        -> HistoryEntry?
    {
        var reader = BinaryReader(payload)
        guard reader.u8() == Self.format, let sealed = reader.u8(), case let rest = reader.rest() else {
            throw RecordError.keys(.doesNotOpen("a history row of \(record)"))
        }
        let body: [UInt8]
        if sealed == 1 {
            guard let subjectKey else { return nil }
            guard let opened = try Sealed.open(rest, under: subjectKey, binding: binding(key)) else {
                throw RecordError.keys(.doesNotOpen("a history row of \(record)"))
            }
            body = opened
        } else {
            body = rest
        }
        guard let (stamp, changes) = Self.decode(body) else {
            throw RecordError.keys(.doesNotOpen("a history row of \(record)"))
        }
        return HistoryEntry(record: record, stamp: stamp, changes: changes)
    }

    /// Up to `limit` rows older than `cutoffMillis`, from `cursor` on (nil: the start), and
    /// where to go on (nil: the end): the retention sweep's step.
    public func expired(
        before cutoffMillis: UInt64, after cursor: [UInt8]?, limit: Int
    ) throws -> (keys: [[UInt8]], next: [UInt8]?) {
        let page = try kv.crmScan(from: cursor ?? prefix, to: CRMLayout.end(of: prefix), limit: limit)
        let keys = page.entries.map(\.key).filter { key in
            var reader = BinaryReader(Array(key.dropFirst(prefix.count + CRMID.byteCount)))
            return (reader.u64() ?? .max) < cutoffMillis
        }
        return (keys, page.more ? page.entries.last.map { $0.key + [0] } : nil)
    }

    private func binding(_ key: [UInt8]) -> [UInt8] { Array("crm.history.v1".utf8) + key }

    static func body(_ stamp: HistoryStamp, _ changes: [FieldChange]) -> [UInt8] {
        var writer = BinaryWriter()
        writer.u64(stamp.atMillis)
        writer.blob(Array(stamp.actor.utf8))
        writer.u16(UInt16(changes.count))
        for change in changes {
            writer.u16(change.field)
            for value in [change.old, change.new] {
                writer.u8(value == nil ? 0 : 1)
                if let value { writer.blob(value.encoded) }
            }
        }
        return writer.bytes
    }

    static func decode(_ body: [UInt8]) -> (HistoryStamp, [FieldChange])? {
        var reader = BinaryReader(body)
        guard let at = reader.u64(), let actor = reader.text(limit: 256), let count = reader.u16(),
            Int(count) <= CRMLimits.fields
        else { return nil }
        var changes: [FieldChange] = []
        for _ in 0..<count {
            guard let field = reader.u16() else { return nil }
            var values: [FieldValue?] = []
            for _ in 0..<2 {
                guard let present = reader.u8() else { return nil }
                if present == 0 {
                    values.append(nil)
                } else {
                    guard let bytes = reader.blob(limit: 1 << 20), let value = FieldValue(encoded: bytes) else {
                        return nil
                    }
                    values.append(value)
                }
            }
            changes.append(FieldChange(field: field, old: values[0], new: values[1]))
        }
        guard reader.isAtEnd else { return nil }
        return (HistoryStamp(actor: actor, atMillis: at), changes)
    }
}

extension RecordChanges {
    /// The record's history, newest first; a record whose subject was erased has none left.
    public func history(of record: StoredRecord, limit: Int) throws -> [HistoryEntry] {
        let subjectKey = try record.subject.flatMap(subjectKeyIfPresent)
        return try FieldHistory(kv: kv, workspace: workspace).entries(
            of: record.id, subjectKey: subjectKey, limit: limit)
    }
}
