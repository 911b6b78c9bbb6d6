import CRM
import KVStore

/// How far a share opens one record to its grantee.
public enum ShareAccess: String, Comparable, CaseIterable, Sendable {
    case none, read, edit

    private var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: ShareAccess, b: ShareAccess) -> Bool { a.rank < b.rank }

    /// Whether this share lets `action` reach the record: read for read, edit for read and
    /// update; never delete or destroy (those stay with the record's scope).
    public func allows(_ action: ObjectAction) -> Bool {
        switch action {
        case .read: return self >= .read
        case .update: return self == .edit
        case .create, .delete, .destroy: return false
        }
    }
}

/// Whom a record is shared with: one user or one team.
public enum Grantee: Equatable, Hashable, Sendable {
    case user(CRMID)
    case team(CRMID)
}

/// Per-record shares, `c/<workspace>/share/<entity><record id>/<u|t><grantee id>` holding the
/// access (ids only: no personal data in keys). A share widens one record for one grantee.
public struct RecordShares: Sendable {
    public let records: RecordChanges
    /// Shares one record may have (a share list larger than this is refused, not scanned).
    public static let maxPerRecord = 256

    public init(records: RecordChanges) { self.records = records }

    public func prefix(_ entity: EntityCode, _ id: CRMID) -> [UInt8] {
        CRMLayout.workspaceKey(records.workspace, "/share/") + Array(entity.rawValue.utf8) + id.bytes + [0x2F]
    }

    public func key(_ entity: EntityCode, _ id: CRMID, _ grantee: Grantee) -> [UInt8] {
        switch grantee {
        case .user(let user): return prefix(entity, id) + [UInt8(ascii: "u")] + user.bytes
        case .team(let team): return prefix(entity, id) + [UInt8(ascii: "t")] + team.bytes
        }
    }

    /// The record's shares with the version each was written at.
    public func shares(
        of entity: EntityCode, _ id: CRMID
    ) throws
        -> [(grantee: Grantee, access: ShareAccess, version: UInt64)]
    {
        let prefix = prefix(entity, id)
        let page = try records.kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: Self.maxPerRecord)
        return page.entries.compactMap { entry in
            let rest = Array(entry.key.dropFirst(prefix.count))
            guard rest.count == 1 + CRMID.byteCount, let grantee = CRMID(bytes: Array(rest.dropFirst())),
                let access = ShareAccess(rawValue: String(decoding: entry.value.payload, as: UTF8.self)),
                let version = entry.value.version
            else { return nil }
            return (rest[0] == UInt8(ascii: "u") ? .user(grantee) : .team(grantee), access, version)
        }
    }

    /// The widest share that opens the record to `user` or one of `teams` for `action`, with the
    /// key and version a write relying on it is conditioned on (nil: none does).
    public func opening(
        _ entity: EntityCode, _ id: CRMID, for action: ObjectAction, user: CRMID, teams: Set<CRMID>
    ) throws -> TransactionCondition? {
        for share in try shares(of: entity, id) where share.access.allows(action) {
            let applies: Bool
            switch share.grantee {
            case .user(let grantee): applies = grantee == user
            case .team(let team): applies = teams.contains(team)
            }
            if applies { return .version(key: key(entity, id, share.grantee), share.version) }
        }
        return nil
    }

    /// Sets the share of the record with `grantee` to `access` (none removes it).
    public func set(_ entity: EntityCode, _ id: CRMID, _ grantee: Grantee, _ access: ShareAccess) throws -> Transaction
    {
        let key = key(entity, id, grantee)
        guard access != .none else { return Transaction(operations: [.delete(key: key)]) }
        let existing = try shares(of: entity, id)
        guard existing.count < Self.maxPerRecord || existing.contains(where: { $0.grantee == grantee }) else {
            throw RecordError.tooLarge("a record is shared with at most \(Self.maxPerRecord) users and teams")
        }
        return Transaction(operations: [.putStamped(key: key, value: Array(access.rawValue.utf8))])
    }

    /// The operation that removes every share of the record (with the record's destruction).
    public func removeAll(_ entity: EntityCode, _ id: CRMID) -> TransactionOperation {
        let prefix = prefix(entity, id)
        return .deleteRange(from: prefix, to: CRMLayout.end(of: prefix))
    }
}
