import AuditChain
import BinaryCoding
import KVStore

/// One audit entry's body: who did what to which records and subjects, through which
/// application, and how it ended. Ids, names of actions and short reasons only: never a
/// personal value: written personal values appear only as digests keyed by the subject's key
/// (`ValueDigest`), which erasing the subject makes unverifiable.
public struct AuditEntry: Equatable, Sendable {
    public enum Outcome: UInt8, Sendable {
        case done = 0
        case denied = 1
        case failed = 2

        public var name: String {
            switch self {
            case .done: "done"
            case .denied: "denied"
            case .failed: "failed"
            }
        }
    }

    /// What was done, as `area.verb` (for example `record.create`, `role.put`, `login.success`).
    public var action: String
    /// Who: `crm://user/<id>`, `crm://client/<name>`, or `crm://member/<id>` for the cluster.
    public var actor: String
    /// The application (client certificate) the call came through.
    public var application: String
    public var entity: EntityCode?
    public var records: [CRMID]
    public var subjects: [CRMID]
    /// Ids of the fields read or written.
    public var fields: [UInt16]
    public var requestID: String
    public var outcome: Outcome
    /// Why it was denied or failed, or what else is worth keeping (ids and names only).
    public var reason: String
    /// For `audit.checkpoint` entries: the signed statement of an earlier entry's hash.
    public var checkpoint: AuditCheckpoint?
    /// For writes: a keyed digest of each personal value written (format 3).
    public var valueDigests: [ValueDigest] = []

    public static let maxRecords = 500
    static let maxTextBytes = 256
    /// Format 2 adds a checkpoint, format 3 the value digests (a checkpoint has none); entries
    /// with neither are still written as format 1.
    static let format: UInt8 = 2
    static let digestsFormat: UInt8 = 3

    public init(
        action: String, actor: String, application: String, entity: EntityCode? = nil, records: [CRMID] = [],
        subjects: [CRMID] = [], fields: [UInt16] = [], requestID: String = "", outcome: Outcome = .done,
        reason: String = ""
    ) {
        self.action = action
        self.actor = actor
        self.application = application
        self.entity = entity
        self.records = records
        self.subjects = subjects
        self.fields = fields
        self.requestID = requestID
        self.outcome = outcome
        self.reason = reason
    }

    /// The body, with texts cut to their bound and lists to `maxRecords`.
    public var encoded: [UInt8] {
        // Cut at a character boundary, so that the text still decodes.
        func text(_ value: String, _ writer: inout BinaryWriter) {
            var kept: [UInt8] = []
            for scalar in value.unicodeScalars {
                let bytes = Array(String(scalar).utf8)
                guard kept.count + bytes.count <= Self.maxTextBytes else { break }
                kept += bytes
            }
            writer.blob(kept)
        }
        var writer = BinaryWriter()
        precondition(checkpoint == nil || valueDigests.isEmpty, "a checkpoint records no written values")
        writer.u8(checkpoint != nil ? Self.format : valueDigests.isEmpty ? 1 : Self.digestsFormat)
        checkpoint?.write(&writer) // right after the format: `AuditCheckpoint.in(entryBody:)` finds it there
        text(action, &writer)
        text(actor, &writer)
        text(application, &writer)
        writer.blob(Array((entity?.rawValue ?? "").utf8))
        for ids in [records, subjects] {
            let kept = ids.prefix(Self.maxRecords)
            writer.u16(UInt16(kept.count))
            for id in kept { writer.raw(id.bytes) }
        }
        let keptFields = fields.prefix(CRMLimits.fields)
        writer.u16(UInt16(keptFields.count))
        for field in keptFields { writer.u16(field) }
        text(requestID, &writer)
        writer.u8(outcome.rawValue)
        text(reason, &writer)
        if !valueDigests.isEmpty {
            let kept = valueDigests.prefix(CRMLimits.fields)
            writer.u16(UInt16(kept.count))
            for digest in kept {
                writer.u16(digest.field)
                writer.raw(digest.digest)
            }
        }
        return writer.bytes
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        func text() -> String? { reader.text(limit: Self.maxTextBytes) }
        func ids() -> [CRMID]? {
            guard let count = reader.u16(), Int(count) <= Self.maxRecords else { return nil }
            var ids: [CRMID] = []
            for _ in 0..<count {
                guard let bytes = reader.raw(CRMID.byteCount), let id = CRMID(bytes: bytes) else { return nil }
                ids.append(id)
            }
            return ids
        }
        guard let format = reader.u8(), [1, Self.format, Self.digestsFormat].contains(format) else { return nil }
        var checkpoint: AuditCheckpoint?
        if format == Self.format {
            guard let read = AuditCheckpoint.read(&reader) else { return nil }
            checkpoint = read
        }
        guard let action = text(), let actor = text(), let application = text(),
            let entityCode = reader.text(limit: 2)
        else { return nil }
        let entity = EntityCode(rawValue: entityCode)
        guard entityCode.isEmpty || entity != nil, let records = ids(), let subjects = ids(),
            let fieldCount = reader.u16(), Int(fieldCount) <= CRMLimits.fields
        else { return nil }
        var fields: [UInt16] = []
        for _ in 0..<fieldCount {
            guard let field = reader.u16() else { return nil }
            fields.append(field)
        }
        guard let requestID = text(), let outcome = reader.u8().flatMap(Outcome.init(rawValue:)), let reason = text()
        else { return nil }
        var digests: [ValueDigest] = []
        if format == Self.digestsFormat {
            guard let count = reader.u16(), count > 0, Int(count) <= CRMLimits.fields else { return nil }
            for _ in 0..<count {
                guard let field = reader.u16(), let digest = reader.raw(ValueDigest.byteCount) else { return nil }
                digests.append(ValueDigest(field: field, digest: digest))
            }
        }
        guard reader.isAtEnd else { return nil }
        self.init(
            action: action, actor: actor, application: application, entity: entity, records: records,
            subjects: subjects, fields: fields, requestID: requestID, outcome: outcome, reason: reason)
        self.checkpoint = checkpoint
        self.valueDigests = digests
    }
}

/// The workspace's audit trail: the hash chain the state machine extends (`AuditChain`), read
/// and checked entry by entry.
public struct AuditTrail: Sendable {
    public let kv: ReplicatedKV
    public let workspace: UInt32

    public init(kv: ReplicatedKV, workspace: UInt32 = CRMLayout.defaultWorkspace) {
        self.kv = kv
        self.workspace = workspace
    }

    public var chain: [UInt8] { Self.chain(workspace: workspace) }

    public static func chain(workspace: UInt32) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/a") }

    /// The operation that appends `entry` when its transaction applies.
    public func append(_ entry: AuditEntry) -> TransactionOperation {
        .appendAudit(chain: chain, body: entry.encoded)
    }

    /// The seq up to which checkpoints have checked the chain (0: none yet).
    public func checked() throws -> UInt64 {
        guard let value = try kv.crmValue(AuditChain.checkedKey(chain)) else { return 0 }
        var reader = BinaryReader(value.payload)
        return reader.u64() ?? 0
    }

    /// The transaction of a checkpoint over `head` signed by `member`: the check every member
    /// makes of its own chain, and the entry that keeps the signed statement.
    public func checkpoint(_ head: AuditHead, member: UInt64, certificate: [UInt8], signature: [UInt8]) -> Transaction {
        var entry = AuditEntry(
            action: "audit.checkpoint", actor: "crm://member/\(member)", application: "crm://member/\(member)",
            reason: "entry \(head.seq)")
        entry.checkpoint = AuditCheckpoint(
            seq: head.seq, hash: head.hash, member: member, certificate: certificate, signature: signature)
        return Transaction(operations: [
            .checkAuditHead(chain: chain, seq: head.seq, hash: head.hash),
            .appendAudit(chain: chain, body: entry.encoded),
        ])
    }

    public func head() throws -> AuditHead {
        guard let value = try kv.crmValue(AuditChain.headKey(chain)) else { return .empty }
        guard let head = AuditHead(encoded: value.payload) else {
            throw RecordError.keys(.doesNotOpen("the audit trail's head"))
        }
        return head
    }

    /// Stored entries from `seq` on, at most `limit`: the sequence number of the key, the link
    /// (nil when it does not decode) and the bytes as stored.
    public func links(from seq: UInt64, limit: Int) throws -> [(seq: UInt64, link: AuditLink?, stored: [UInt8])] {
        let prefix = AuditChain.entryPrefix(chain)
        let page = try kv.crmScan(
            from: AuditChain.entryKey(chain, seq), to: CRMLayout.end(of: prefix), limit: max(1, min(limit, 10_000)))
        return page.entries.map { entry in
            var reader = BinaryReader(Array(entry.key.dropFirst(prefix.count)))
            let keySeq = reader.u64() ?? 0
            return (keySeq, AuditLink(encoded: entry.value.payload), entry.value.payload)
        }
    }
}
