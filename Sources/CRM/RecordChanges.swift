import BinaryCoding
import KVStore
import Sealing

/// Why a record change or read is refused. Texts name entities, fields and ids, never values.
public enum RecordError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownField(entity: EntityCode, name: String)
    case invalid(FieldError)
    case tooLarge(String)
    case notFound(EntityCode, CRMID)
    /// The record changed since the version the caller read (its current version).
    case versionMismatch(current: UInt64)
    case keys(CRMKeyError)
    /// A request that cannot be served as asked (the text says why).
    case badRequest(String)
    /// A page token that is altered, foreign, expired or of a retired key set.
    case badPageToken(String)

    public var description: String {
        switch self {
        case .unknownField(let entity, let name): return "\(entity.name) has no field `\(name)`"
        case .invalid(let error): return error.description
        case .tooLarge(let why): return why
        case .notFound(let entity, let id): return "no \(entity.name) \(id)"
        case .versionMismatch(let current): return "the record has changed; its current version is \(current)"
        case .keys(let error): return error.description
        case .badRequest(let why): return why
        case .badPageToken(let why): return "the page token is refused: \(why)"
        }
    }
}

/// A record as read: its stored form and its version and update time (from the stamp).
public struct VersionedRecord: Sendable {
    public var record: StoredRecord
    public var version: UInt64
    public var updatedAtMillis: UInt64
}

/// Makes the transactions that change records, as the proposing member does: ids, subject keys,
/// nonces, ciphertexts and lookup tokens are made here; the apply adds only the version and the
/// time. Each transaction is conditioned on the key set it sealed under and on the versions it
/// read, so a concurrent change or a rotation makes it fail whole (to be made again).
public struct RecordChanges: Sendable {
    public let keys: CRMKeyState
    public let kv: ReplicatedKV
    public var workspace = CRMLayout.defaultWorkspace

    public init(keys: CRMKeyState, kv: ReplicatedKV) {
        self.keys = keys
        self.kv = kv
    }

    // MARK: Writing

    /// A new record. A person is its own data subject: it gets a fresh subject key (`subjectKey`
    /// when the caller made it, to digest the written values under it).
    public func create(
        _ entity: EntityCode, id: CRMID, fields input: [String: FieldValue], owner: String, teams: [CRMID],
        principal: String, now: UInt64, subjectKey given: SymmetricKey? = nil
    ) throws -> Transaction {
        let definition = try definition(entity)
        let keySet = try inUse()
        let values = try validated(input, definition)
        try Self.checkTeams(teams)
        var conditions: [TransactionCondition] = [
            .keySet(keySet.version), .absent(key: CRMLayout.record(workspace: workspace, entity: entity, id: id)),
        ]
        var operations: [TransactionOperation] = []
        var record = StoredRecord(
            entity: entity, id: id, owner: owner, teams: teams, subject: nil, createdAtMillis: now,
            createdBy: principal)
        if definition.sealsUnderOwnSubject {
            let subjectKey = try given ?? SymmetricKey.generate()
            let vaultKey = CRMLayout.subjectKey(workspace: workspace, subject: id)
            conditions.append(.absent(key: vaultKey))
            operations.append(
                .putStamped(
                    key: vaultKey,
                    value: try SubjectKeys.wrap(subjectKey, subject: id, workspace: workspace, under: keySet)))
            record.subject = id
            try fill(&record, values, definition, subjectKey: { subjectKey })
        } else {
            let subject = hasPersonal(values, definition) ? subjectOf(values) : nil
            record.subject = subject
            try fill(&record, values, definition) {
                try self.subjectKey(subject!, &conditions, &operations, keySet)
            }
        }
        record.indexKeys = try indexKeys(of: record, values, definition, keySet)
        conditions += uniqueGuards(in: record.indexKeys).map { .absent(key: $0) }
        operations.append(.putStamped(key: recordKey(record), value: try checkedSize(record)))
        operations += record.indexKeys.map { .put(key: $0, value: []) }
        operations.append(updatedEntry(record))
        return Transaction(conditions: conditions, operations: operations)
    }

    /// A record's (or user's) teams: at most `CRMLimits.teams`, none twice.
    public static func checkTeams(_ teams: [CRMID]) throws {
        guard teams.count <= CRMLimits.teams else {
            throw RecordError.tooLarge("a record belongs to at most \(CRMLimits.teams) teams")
        }
        guard Set(teams).count == teams.count else { throw RecordError.badRequest("a team is named twice") }
    }

    /// Sets and clears fields of the record read at `current`, and moves it to `owner` and
    /// `teams` when given; fails if it changed since. With `history`, the changes of tracked
    /// fields (`FieldHistory.tracks`) are kept in a history row of the same transaction.
    public func update(
        _ current: VersionedRecord, set input: [String: FieldValue], clear: [String], owner: String? = nil,
        teams: [CRMID]? = nil, history: HistoryStamp? = nil
    ) throws -> Transaction {
        if let teams { try Self.checkTeams(teams) }
        let definition = try definition(current.record.entity)
        let keySet = try inUse()
        var values = try open(current.record, fields: nil, definition: definition)
        let before = values
        for (name, value) in try validated(input, definition) { values[name] = value }
        for name in clear {
            guard definition.field(named: name) != nil else {
                throw RecordError.unknownField(entity: current.record.entity, name: name)
            }
            values[name] = nil
        }
        var record = current.record
        if let owner { record.owner = owner }
        if let teams { record.teams = teams }
        var conditions: [TransactionCondition] = [
            .keySet(keySet.version), .version(key: recordKey(record), current.version),
        ]
        var operations: [TransactionOperation] = []
        // Unknown ids are kept as they are (a newer member's); retired fields' values go now.
        let known = Set(definition.fields.map(\.id))
        record.fields = record.fields.filter { !known.contains($0.key) }
        if record.subject == nil, hasPersonal(values, definition) { record.subject = subjectOf(values) }
        let subject = record.subject
        var sealingKey: SymmetricKey?
        func key() throws -> SymmetricKey {
            if let sealingKey { return sealingKey }
            let found = try self.subjectKey(subject!, &conditions, &operations, keySet)
            sealingKey = found
            return found
        }
        try fill(&record, values, definition, subjectKey: key)
        if let history {
            let changes = definition.fields.filter { FieldHistory.tracks($0) }.compactMap {
                field -> FieldChange? in
                before[field.name] == values[field.name]
                    ? nil : FieldChange(field: field.id, old: before[field.name], new: values[field.name])
            }
            if !changes.isEmpty {
                operations.append(
                    try FieldHistory(kv: kv, workspace: workspace).row(
                        record.id, history, changes, subjectKey: subject == nil ? nil : try key()))
            }
        }
        let newIndexes = try indexKeys(of: record, values, definition, keySet)
        let hadGuards = Set(uniqueGuards(in: current.record.indexKeys))
        conditions += uniqueGuards(in: newIndexes).filter { !hadGuards.contains($0) }.map { .absent(key: $0) }
        operations += indexChanges(from: current.record.indexKeys, to: newIndexes)
        record.indexKeys = newIndexes
        operations.append(.putStamped(key: recordKey(record), value: try checkedSize(record)))
        operations.append(.delete(key: updatedKey(current)))
        operations.append(updatedEntry(record))
        return Transaction(conditions: conditions, operations: operations)
    }

    /// Moves the record to the trash (or back): its fields stay, the trash index lists it.
    public func setDeleted(_ current: VersionedRecord, _ deleted: Bool) throws -> Transaction {
        var record = current.record
        record.deleted = deleted
        let trash = trashKey(record)
        record.indexKeys = current.record.indexKeys.filter { $0 != trash } + (deleted ? [trash] : [])
        let operations: [TransactionOperation] = [
            deleted ? .put(key: trash, value: []) : .delete(key: trash),
            .putStamped(key: recordKey(record), value: try checkedSize(record)),
            .delete(key: updatedKey(current)),
            updatedEntry(record),
        ]
        return Transaction(conditions: [.version(key: recordKey(record), current.version)], operations: operations)
    }

    /// Removes the record and every index entry it has; a person's subject key goes with it,
    /// which leaves every copy of its sealed fields (log, snapshots, backups) unreadable.
    public func destroy(_ current: VersionedRecord) -> Transaction {
        let record = current.record
        var operations: [TransactionOperation] = [.delete(key: recordKey(record)), .delete(key: updatedKey(current))]
        operations += record.indexKeys.map { .delete(key: $0) }
        if record.subject == record.id {
            operations.append(.delete(key: CRMLayout.subjectKey(workspace: workspace, subject: record.id)))
        }
        return Transaction(conditions: [.version(key: recordKey(record), current.version)], operations: operations)
    }

    // MARK: Reading

    /// The record, or nil.
    public func read(_ entity: EntityCode, _ id: CRMID) throws -> VersionedRecord? {
        guard let value = try kv.crmValue(CRMLayout.record(workspace: workspace, entity: entity, id: id)) else {
            return nil
        }
        return try decoded(value, entity, id)
    }

    /// The record stored as `value` at the key of `entity` and `id`.
    func decoded(_ value: CRMValue, _ entity: EntityCode, _ id: CRMID) throws -> VersionedRecord {
        guard let record = StoredRecord(encoded: value.payload), let version = value.version, record.id == id,
            record.entity == entity
        else { throw RecordError.keys(.doesNotOpen("\(entity.name) \(id)")) }
        return VersionedRecord(record: record, version: version, updatedAtMillis: value.updatedAtMillis)
    }

    /// The record's field values by name (only `fields` when given), personal ones opened;
    /// fields not in `definition` (read when not given) are left out.
    public func open(
        _ record: StoredRecord, fields: Set<String>?, definition: EntityDefinition? = nil
    ) throws -> [String: FieldValue] {
        let definition = try definition ?? self.definition(record.entity)
        var values: [String: FieldValue] = [:]
        var subjectKey: SymmetricKey?
        for (id, stored) in record.fields.sorted(by: { $0.key < $1.key }) {
            guard let field = definition.field(id: id), fields?.contains(field.name) ?? true else { continue }
            let bytes: [UInt8]
            switch stored {
            case .plain(let plain): bytes = plain
            case .sealed(let sealed):
                guard let subject = record.subject else { throw RecordError.keys(.doesNotOpen("a sealed field")) }
                if subjectKey == nil { subjectKey = try self.existingSubjectKey(subject) }
                bytes = try FieldSealing.open(sealed, at: place(record, id), under: subjectKey!)
            }
            guard let value = FieldValue(encoded: bytes) else {
                throw RecordError.keys(.doesNotOpen("field \(field.name) of \(record.entity.name) \(record.id)"))
            }
            values[field.name] = value
        }
        return values
    }

    // MARK: Helpers

    public func inUse() throws -> CRMKeySet {
        do {
            guard let set = try keys.inUse() else { throw CRMKeyError.keyUnavailable("the CRM has no key set yet") }
            return set
        } catch let error as CRMKeyError {
            throw RecordError.keys(error)
        }
    }

    private func validated(_ input: [String: FieldValue], _ definition: EntityDefinition) throws -> [String: FieldValue]
    {
        guard input.count <= CRMLimits.fields else { throw RecordError.tooLarge("at most \(CRMLimits.fields) fields") }
        var values: [String: FieldValue] = [:]
        for (name, value) in input {
            guard let field = definition.field(named: name) else {
                throw RecordError.unknownField(entity: definition.code, name: name)
            }
            do { values[name] = try value.validated(for: field) } catch let error as FieldError {
                throw RecordError.invalid(error)
            }
        }
        return values
    }

    /// Whose key seals an activity's or a company's personal fields: the first person among an
    /// activity's targets, else the workspace's own subject.
    func subjectOf(_ values: [String: FieldValue]) -> CRMID {
        if case .targets(let targets)? = values["targets"], let person = targets.first(where: { $0.entity == .person })
        {
            return person.id
        }
        return CRMLayout.workspaceSubject
    }

    private func hasPersonal(_ values: [String: FieldValue], _ definition: EntityDefinition) -> Bool {
        values.keys.contains { definition.field(named: $0)?.personal == true }
    }

    /// The unwrapped key of `subject`; for the workspace subject, made (and its creation added
    /// to the transaction) the first time it is needed.
    private func subjectKey(
        _ subject: CRMID, _ conditions: inout [TransactionCondition], _ operations: inout [TransactionOperation],
        _ keySet: CRMKeySet
    ) throws -> SymmetricKey {
        let vaultKey = CRMLayout.subjectKey(workspace: workspace, subject: subject)
        if let stored = try kv.crmValue(vaultKey), let version = stored.version {
            conditions.append(.version(key: vaultKey, version))
            return try unwrap(stored.payload, subject)
        }
        guard subject == CRMLayout.workspaceSubject else {
            throw RecordError.notFound(.person, subject)
        }
        let key = try SymmetricKey.generate()
        conditions.append(.absent(key: vaultKey))
        operations.append(
            .putStamped(
                key: vaultKey, value: try SubjectKeys.wrap(key, subject: subject, workspace: workspace, under: keySet)))
        return key
    }

    /// The subject's key, or nil when it is gone (erased) — one read.
    func subjectKeyIfPresent(_ subject: CRMID) throws -> SymmetricKey? {
        try kv.crmValue(CRMLayout.subjectKey(workspace: workspace, subject: subject)).map {
            try unwrap($0.payload, subject)
        }
    }

    func existingSubjectKey(_ subject: CRMID) throws -> SymmetricKey {
        guard let stored = try kv.crmValue(CRMLayout.subjectKey(workspace: workspace, subject: subject)) else {
            throw RecordError.keys(.doesNotOpen("subject \(subject)'s key (erased)"))
        }
        return try unwrap(stored.payload, subject)
    }

    private func unwrap(_ wrapped: [UInt8], _ subject: CRMID) throws -> SymmetricKey {
        do {
            return try SubjectKeys.unwrap(
                wrapped, subject: subject, workspace: workspace, keySets: { try? keys.keySet($0) })
        } catch let error as CRMKeyError {
            throw RecordError.keys(error)
        }
    }

    private func fill(
        _ record: inout StoredRecord, _ values: [String: FieldValue], _ definition: EntityDefinition,
        subjectKey: () throws -> SymmetricKey
    ) throws {
        var key: SymmetricKey?
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            let field = definition.field(named: name)!
            if field.personal {
                if key == nil { key = try subjectKey() }
                record.fields[field.id] = .sealed(
                    try FieldSealing.seal(value.encoded, at: place(record, field.id), under: key!))
            } else {
                record.fields[field.id] = .plain(value.encoded)
            }
        }
    }

    private func place(_ record: StoredRecord, _ field: UInt16) -> FieldPlace {
        FieldPlace(workspace: workspace, entity: record.entity.rawValue, record: record.id, field: field)
    }

    /// The record's index entries from its values: lookup tokens of personal values, ids, dates
    /// and choices of indexed fields, owner, teams and trash.
    private func indexKeys(
        of record: StoredRecord, _ values: [String: FieldValue], _ definition: EntityDefinition, _ keySet: CRMKeySet
    ) throws -> [[UInt8]] {
        var keys: [[UInt8]] = []
        func entry(_ code: String, _ value: [UInt8]) {
            keys.append(
                CRMLayout.indexEntry(workspace: workspace, code, value: value, entity: record.entity, id: record.id))
        }
        func token(_ purpose: FieldLookup, _ text: String) -> [UInt8] {
            LookupTokens.token(purpose: purpose.rawValue, normalised: Array(text.utf8), keySet: keySet)
        }
        for field in definition.fieldsInUse {
            guard let value = values[field.name] else { continue }
            switch (field.lookup, value) {
            case (.email?, .texts(let items)), (.phone?, .texts(let items)):
                for item in Set(items).sorted() { entry(field.lookup!.rawValue, token(field.lookup!, item)) }
            case (.domain?, .text(let text)):
                guard let domain = Normalise.domain(text) else {
                    throw RecordError.invalid(FieldError(field: field.name, reason: "is not a domain name"))
                }
                entry(FieldLookup.domain.rawValue, token(.domain, domain))
            case (.username?, .text(let text)):
                guard let username = Normalise.username(text) else {
                    throw RecordError.invalid(
                        FieldError(
                            field: field.name, reason: "must be 3 to 64 letters, digits, '.', '_', '-' or '@'"))
                }
                let value = token(.username, username)
                entry(FieldLookup.username.rawValue, value)
                keys.append(CRMLayout.uniqueGuard(workspace: workspace, FieldLookup.username.rawValue, value: value))
            default: break
            }
            switch (field.index, value) {
            case (_?, .reference(let id)): entry(field.index!.rawValue, id.bytes)
            case (_?, .targets(let refs)):
                for ref in Set(refs).sorted(by: { $0.id.bytes.lexicographicallyPrecedes($1.id.bytes) }) {
                    entry(field.index!.rawValue, ref.id.bytes)
                }
            case (_?, .text(let choice)):
                entry(
                    field.index!.rawValue,
                    LookupTokens.token(purpose: "choice:" + field.name, normalised: Array(choice.utf8), keySet: keySet))
            case (_?, .date(let year, let month, let day)):
                var writer = BinaryWriter()
                writer.u16(UInt16(year)); writer.u8(UInt8(month)); writer.u8(UInt8(day)); writer.u32(0)
                entry(field.index!.rawValue, writer.bytes)
            case (_?, .timestamp(let millis)):
                var writer = BinaryWriter()
                writer.u64(millis)
                entry(field.index!.rawValue, writer.bytes)
            default: break
            }
        }
        // A name lookup covers the whole name (a person's first and last name together).
        let nameParts = definition.fieldsInUse.filter { $0.lookup == .name }.compactMap { field -> String? in
            if case .text(let text)? = values[field.name] { return text }
            return nil
        }
        if !nameParts.isEmpty {
            entry(FieldLookup.name.rawValue, token(.name, Normalise.name(nameParts.joined(separator: " "))))
        }
        entry("ow", LookupTokens.token(purpose: "owner", normalised: Array(record.owner.utf8), keySet: keySet))
        for team in Set(record.teams).sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) }) {
            entry("tm", team.bytes)
        }
        if record.deleted { keys.append(trashKey(record)) }
        var seen = Set<[UInt8]>()
        keys = keys.filter { seen.insert($0).inserted }
        guard keys.count <= StoredRecord.maxIndexKeys else { throw RecordError.tooLarge("too many index entries") }
        return keys
    }

    private func uniqueGuards(in keys: [[UInt8]]) -> [[UInt8]] {
        let prefix = CRMLayout.uniqueGuardPrefix(workspace: workspace)
        return keys.filter { $0.starts(with: prefix) }
    }

    private func indexChanges(from old: [[UInt8]], to new: [[UInt8]]) -> [TransactionOperation] {
        let kept = Set(new)
        let had = Set(old)
        return old.filter { !kept.contains($0) }.map { .delete(key: $0) }
            + new.filter { !had.contains($0) }.map {
                .put(key: $0, value: [])
            }
    }

    private func trashKey(_ record: StoredRecord) -> [UInt8] {
        CRMLayout.indexEntry(workspace: workspace, "tr", value: [], entity: record.entity, id: record.id)
    }

    private func recordKey(_ record: StoredRecord) -> [UInt8] {
        CRMLayout.record(workspace: workspace, entity: record.entity, id: record.id)
    }

    private func updatedEntry(_ record: StoredRecord) -> TransactionOperation {
        .putAtLogTime(
            prefix: CRMLayout.updatedPrefix(workspace: workspace),
            suffix: CRMLayout.recordSuffix(record.entity, record.id))
    }

    private func updatedKey(_ current: VersionedRecord) -> [UInt8] {
        var writer = BinaryWriter()
        writer.raw(CRMLayout.updatedPrefix(workspace: workspace))
        writer.u64(current.updatedAtMillis)
        writer.raw(CRMLayout.recordSuffix(current.record.entity, current.record.id))
        return writer.bytes
    }

    private func checkedSize(_ record: StoredRecord) throws -> [UInt8] {
        let encoded = record.encoded
        guard encoded.count <= CRMLimits.recordBytes else {
            throw RecordError.tooLarge("a record is at most \(CRMLimits.recordBytes) bytes; this one \(encoded.count)")
        }
        return encoded
    }
}

extension RecordChanges {
    /// At most this many records answer one lookup.
    public static let maxLookupResults = 100

    /// The records of `entity` whose `lookup` value equals `value` once normalised (nil: the
    /// value cannot be one, such as a phone number without a country code).
    public func lookup(_ entity: EntityCode, by lookup: FieldLookup, value: String) throws -> [VersionedRecord]? {
        let normalised: String?
        switch lookup {
        case .email: normalised = Normalise.email(value)
        case .phone: normalised = Normalise.phone(value)
        case .name: normalised = Normalise.name(value)
        case .domain: normalised = Normalise.domain(value)
        case .username: normalised = Normalise.username(value)
        }
        guard let normalised else { return nil }
        let token = LookupTokens.token(
            purpose: lookup.rawValue, normalised: Array(normalised.utf8), keySet: try inUse())
        let prefix =
            CRMLayout.indexPrefix(workspace: workspace, lookup.rawValue, value: token) + Array(entity.rawValue.utf8)
        let page = try kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: Self.maxLookupResults)
        return try page.entries.compactMap { entry in
            guard let id = CRMID(bytes: Array(entry.key.suffix(CRMID.byteCount))) else { return nil }
            return try read(entity, id)
        }
    }

    /// The id a create with `requestID` from `principal` gets: the same for a retry, unrelated
    /// for anyone else (keyed by the cursor key of the key set in use, so it cannot be predicted
    /// outside; a retry that straddles a key-set rotation gets another id).
    public func id(principal: String, requestID: String) throws -> CRMID {
        var writer = BinaryWriter()
        writer.raw(Array("crm.create.v1".utf8))
        writer.blob(Array(principal.utf8))
        writer.blob(Array(requestID.utf8))
        let keySet = try inUse()
        return CRMID(
            bytes: Array(HMACSHA256.authenticate(writer.bytes, key: keySet.key(.cursor)).prefix(CRMID.byteCount)))!
    }
}
