import BinaryCoding
import Foundation
import KVStore
import Sealing

/// The index that drives a list: its order is the list's order.
public enum ListIndex: String, CaseIterable, Sendable {
    /// Every record of the entity, by id.
    case all
    /// By update time, oldest first (a syncing client resumes from its last page token).
    case updated
    /// The records an application owns (`value`: its identity).
    case owner
    /// The records of a team (`value`: the team's id).
    case team
    /// By due date (a deal's close date, an activity's due time).
    case due
    /// Records in the trash.
    case trash
    /// Records whose field with this index holds `value` (an id, or a choice).
    case company, stage, status, assignee, target, contact

    /// The field index a field-driven list reads.
    var fieldIndex: FieldIndex? {
        switch self {
        case .company: return .company
        case .stage: return .stage
        case .status: return .status
        case .assignee: return .assignee
        case .target: return .target
        case .contact: return .contact
        case .due: return .due
        case .all, .updated, .owner, .team, .trash: return nil
        }
    }
}

/// One list request: an index (with its value where it needs one), equality filters on
/// non-personal fields, and a page size.
public struct ListQuery: Sendable {
    public var entity: EntityCode
    public var index: ListIndex
    /// The index's value: an owner's identity, an id (team, company, assignee, target,
    /// contact) or a choice (stage, status); nil for all, updated, due and trash.
    public var value: String?
    public var filters: [String: FieldValue]
    public var includeDeleted: Bool
    public var pageSize: Int

    public static let maxPageSize = 500
    public static let defaultPageSize = 50
    /// Index entries read for one page at most: a filter that matches little ends a page early
    /// (with a token to go on) instead of reading the whole index in one call.
    public static let maxScannedPerPage = 5000

    public init(
        entity: EntityCode, index: ListIndex = .all, value: String? = nil, filters: [String: FieldValue] = [:],
        includeDeleted: Bool = false, pageSize: Int = ListQuery.defaultPageSize
    ) {
        self.entity = entity
        self.index = index
        self.value = value
        self.filters = filters
        self.includeDeleted = includeDeleted
        self.pageSize = pageSize
    }

    /// A digest of everything that decides which records the list holds, which page tokens
    /// are bound to (a token does not continue another list).
    var digest: [UInt8] {
        var writer = BinaryWriter()
        writer.raw(Array("crm.list.v1".utf8))
        writer.blob(Array(entity.rawValue.utf8))
        writer.blob(Array(index.rawValue.utf8))
        writer.optionalBlob(value.map { Array($0.utf8) })
        writer.bool(includeDeleted)
        for (name, filter) in filters.sorted(by: { $0.key < $1.key }) {
            writer.blob(Array(name.utf8))
            writer.blob(filter.encoded)
        }
        return HMACSHA256.sha256(writer.bytes)
    }
}

/// A page of a list: its records, and where the next page starts (nil: the list is done).
public struct ListPage: Sendable {
    public var records: [VersionedRecord]
    public var resumeAfter: [UInt8]?
}

extension RecordChanges {
    /// The next page of `query` after the index key `after` (nil: from the start). Refuses a
    /// filter on a personal field (they are found only exactly, through a lookup) and an index
    /// the entity does not have.
    public func list(_ query: ListQuery, after: [UInt8]?) throws -> ListPage {
        let definition = try definition(query.entity)
        let filters = try listFilters(query.filters, definition)
        guard (1...ListQuery.maxPageSize).contains(query.pageSize) else {
            throw RecordError.badRequest("`page_size` is 1 to \(ListQuery.maxPageSize)")
        }
        let (prefix, idAt) = try listRange(query, definition)
        let end = CRMLayout.end(of: prefix)
        if let after, !after.starts(with: prefix) || after.count <= prefix.count {
            throw RecordError.badPageToken("it belongs to another list")
        }
        var from = after.map { $0 + [0] } ?? prefix
        var records: [VersionedRecord] = []
        var scanned = 0
        while scanned < ListQuery.maxScannedPerPage {
            let page = try kv.crmScan(
                from: from, to: end, limit: min(1024, ListQuery.maxScannedPerPage - scanned))
            for entry in page.entries {
                scanned += 1
                if let record = try listed(entry, idAt, query), matches(record, filters, query) {
                    records.append(record)
                    if records.count == query.pageSize {
                        let more = page.more || entry.key != page.entries.last!.key
                        return ListPage(records: records, resumeAfter: more ? entry.key : nil)
                    }
                }
            }
            guard page.more, let last = page.entries.last else { return ListPage(records: records, resumeAfter: nil) }
            from = last.key + [0]
        }
        return ListPage(records: records, resumeAfter: Array(from.dropLast()))
    }

    /// The key range a list reads, and where in each key the record's entity and id sit
    /// (counted from the key's end: `<entity, 2 bytes><id, 16 bytes>`, or the record key's id).
    private func listRange(_ query: ListQuery, _ definition: EntityDefinition) throws -> ([UInt8], IDPlace) {
        let entity = Array(query.entity.rawValue.utf8)
        func needsValue() throws -> String {
            guard let value = query.value, !value.isEmpty else {
                throw RecordError.badRequest("a list by \(query.index.rawValue) needs a `value`")
            }
            return value
        }
        func noValue() throws {
            guard query.value?.isEmpty ?? true else {
                throw RecordError.badRequest("a list by \(query.index.rawValue) takes no `value`")
            }
        }
        func id(_ text: String) throws -> [UInt8] {
            guard let id = CRMID(hex: text) else {
                throw RecordError.badRequest("`value` must be an id (32 hexadecimal characters)")
            }
            return id.bytes
        }
        switch query.index {
        case .all:
            try noValue()
            return (CRMLayout.recordPrefix(workspace: workspace, entity: query.entity), .recordKey)
        case .updated:
            try noValue()
            return (CRMLayout.updatedPrefix(workspace: workspace), .entityAndID)
        case .trash:
            try noValue()
            return (CRMLayout.indexPrefix(workspace: workspace, "tr", value: []) + entity, .entityAndID)
        case .owner:
            let owner = try needsValue()
            let token = LookupTokens.token(purpose: "owner", normalised: Array(owner.utf8), keySet: try inUse())
            return (CRMLayout.indexPrefix(workspace: workspace, "ow", value: token) + entity, .entityAndID)
        case .team:
            return (
                CRMLayout.indexPrefix(workspace: workspace, "tm", value: try id(try needsValue())) + entity,
                .entityAndID
            )
        case .due:
            try noValue()
            try requireField(with: .due, definition)
            return (CRMLayout.indexPrefix(workspace: workspace, FieldIndex.due.rawValue, value: []), .entityAndID)
        case .company, .assignee, .target, .contact, .stage, .status:
            let index = query.index.fieldIndex!
            let field = try requireField(with: index, definition)
            let value = try needsValue()
            let indexed: [UInt8]
            if case .choice(let choices) = field.type {
                guard choices.contains(value) else {
                    throw RecordError.badRequest("`value` is one of \(choices.joined(separator: ", "))")
                }
                indexed = LookupTokens.token(
                    purpose: "choice:" + field.name, normalised: Array(value.utf8), keySet: try inUse())
            } else {
                indexed = try id(value)
            }
            return (CRMLayout.indexPrefix(workspace: workspace, index.rawValue, value: indexed) + entity, .entityAndID)
        }
    }

    @discardableResult
    private func requireField(with index: FieldIndex, _ definition: EntityDefinition) throws -> FieldDefinition {
        guard let field = definition.fields.first(where: { $0.index == index }) else {
            throw RecordError.badRequest("\(definition.code.name) records have no \(index) index")
        }
        return field
    }

    /// The record an entry names (a record key holds the record itself; an index entry names
    /// one), if it is of the listed entity and still there.
    private func listed(
        _ entry: (key: [UInt8], value: CRMValue), _ place: IDPlace, _ query: ListQuery
    ) throws -> VersionedRecord? {
        let suffix = Array(entry.key.suffix(CRMID.byteCount + 2))
        guard suffix.count == CRMID.byteCount + 2, let id = CRMID(bytes: Array(suffix.suffix(CRMID.byteCount))) else {
            return nil
        }
        switch place {
        case .recordKey: return try decoded(entry.value, query.entity, id)
        case .entityAndID:
            guard suffix.prefix(2).elementsEqual(query.entity.rawValue.utf8) else { return nil }
            return try read(query.entity, id)
        }
    }

    private func matches(_ record: VersionedRecord, _ filters: [UInt16: [UInt8]], _ query: ListQuery) -> Bool {
        guard query.index == .trash || query.includeDeleted || !record.record.deleted else { return false }
        for (field, wanted) in filters {
            guard case .plain(let stored)? = record.record.fields[field], stored == wanted else { return false }
        }
        return true
    }

    /// Filters by field id, as the encoded values stored fields hold.
    private func listFilters(
        _ filters: [String: FieldValue], _ definition: EntityDefinition
    ) throws -> [UInt16: [UInt8]] {
        guard filters.count <= 16 else { throw RecordError.badRequest("a list takes at most 16 filters") }
        var byID: [UInt16: [UInt8]] = [:]
        for (name, value) in filters {
            guard let field = definition.field(named: name) else {
                throw RecordError.unknownField(entity: definition.code, name: name)
            }
            guard !field.personal else {
                throw RecordError.badRequest(
                    "field `\(name)` is personal data and cannot filter a list; find it exactly with a lookup")
            }
            do { byID[field.id] = try value.validated(for: field).encoded } catch let error as FieldError {
                throw RecordError.invalid(error)
            }
        }
        return byID
    }
}

enum IDPlace { case recordKey, entityAndID }

/// Page tokens: the list position sealed with AES-256-GCM under a key made from the cursor key
/// of a key set, bound to the workspace, the caller and the list's digest, with the time it
/// was issued. An altered token, one issued to another caller or for another list, or one
/// older than an hour is refused.
public enum PageTokens {
    public static let maxAgeMillis: UInt64 = 3_600_000
    public static let maxTextBytes = 1024
    static let prefix = "p1."

    public static func seal(
        _ resumeAfter: [UInt8], query: ListQuery, principal: String, workspace: UInt32, issuedAtMillis: UInt64,
        keySet: CRMKeySet
    ) throws -> String {
        var plain = BinaryWriter()
        plain.u64(issuedAtMillis)
        plain.blob(resumeAfter)
        let sealed = try Sealed.seal(
            plain.bytes, under: key(keySet),
            binding: binding(query, principal, workspace, keySet.version))
        var writer = BinaryWriter()
        writer.u64(keySet.version)
        writer.raw(sealed)
        return prefix + base64URL(writer.bytes)
    }

    /// The list position in `token`, or why it is refused.
    public static func open(
        _ token: String, query: ListQuery, principal: String, workspace: UInt32, nowMillis: UInt64,
        keySets: (UInt64) -> CRMKeySet?
    ) throws -> [UInt8] {
        guard token.utf8.count <= maxTextBytes, token.hasPrefix(prefix),
            let bytes = bytes(base64URL: token.dropFirst(prefix.count))
        else { throw RecordError.badPageToken("it is not a page token") }
        var reader = BinaryReader(bytes)
        guard let version = reader.u64() else { throw RecordError.badPageToken("it is not a page token") }
        guard let keySet = keySets(version) else { throw RecordError.badPageToken("its key set has been retired") }
        guard
            let plain = try Sealed.open(
                reader.rest(), under: key(keySet), binding: binding(query, principal, workspace, version))
        else { throw RecordError.badPageToken("it was altered, or issued to another caller or for another list") }
        var fields = BinaryReader(plain)
        guard let issued = fields.u64(), let resume = fields.blob(limit: TransactionLimits.maxKeyBytes),
            fields.isAtEnd
        else { throw RecordError.badPageToken("it does not decode") }
        guard nowMillis < issued &+ maxAgeMillis, issued <= nowMillis &+ 60_000 else {
            throw RecordError.badPageToken("it has expired (tokens last an hour); list again from the start")
        }
        return resume
    }

    private static func key(_ keySet: CRMKeySet) -> SymmetricKey {
        SymmetricKey(copying: HMACSHA256.authenticate(Array("crm.page-token.v1".utf8), key: keySet.key(.cursor)))
    }

    private static func binding(
        _ query: ListQuery, _ principal: String, _ workspace: UInt32, _ version: UInt64
    )
        -> [UInt8]
    {
        var writer = BinaryWriter()
        writer.raw(Array("crm.page.v1".utf8))
        writer.u32(workspace)
        writer.u64(version)
        writer.blob(Array(principal.utf8))
        writer.raw(query.digest)
        return writer.bytes
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The bytes of unpadded base64url `text`; nil for anything else, a non-canonical spelling
    /// included (so that one token has exactly one text).
    static func bytes(base64URL text: Substring) -> [UInt8]? {
        guard text.utf8.allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "=") })
        else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        standard += String(repeating: "=", count: (4 - standard.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: standard) else { return nil }
        let bytes = [UInt8](data)
        guard base64URL(bytes).utf8.elementsEqual(text.utf8) else { return nil }
        return bytes
    }
}
