import BinaryCoding

/// The record schema this binary reads and writes (members report it).
public enum CRMSchema {
    public static let version: UInt16 = 1
}

/// A field as stored: its encoded value in the clear (not personal data), or sealed under the
/// record's subject key and bound to its place.
public enum StoredField: Equatable, Sendable {
    case plain([UInt8])
    case sealed([UInt8])
}

/// A record as stored under `<workspace>/r/<entity>/<id>`, inside a stamped CRM value (whose
/// stamp is the record's version, its ETag, and its update time).
///
/// Fields are kept by id; an id this member does not know is kept as it is (a newer member may
/// have written it), never interpreted. `indexKeys` lists every index entry the record has, so
/// a change or a deletion removes them without opening a sealed value.
public struct StoredRecord: Equatable, Sendable {
    public var entity: EntityCode
    public var id: CRMID
    public var schema: UInt16
    public var deleted: Bool
    /// The principal (an application's identity, later a user) that owns it.
    public var owner: String
    public var teams: [CRMID]
    /// Whose key seals its personal fields (nil: it has none).
    public var subject: CRMID?
    public var createdAtMillis: UInt64
    public var createdBy: String
    public var fields: [UInt16: StoredField]
    public var indexKeys: [[UInt8]]

    static let format: UInt8 = 1
    static let schemaVersion = CRMSchema.version
    static let maxIdentityBytes = 256
    static let maxIndexKeys = 4 * CRMLimits.listItems + 16

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 256)
        writer.u8(Self.format)
        writer.raw(Array(entity.rawValue.utf8))
        writer.raw(id.bytes)
        writer.u16(schema)
        writer.u8(deleted ? 1 : 0)
        writer.blob(Array(owner.utf8))
        writer.u16(UInt16(teams.count))
        for team in teams { writer.raw(team.bytes) }
        writer.bool(subject != nil)
        if let subject { writer.raw(subject.bytes) }
        writer.u64(createdAtMillis)
        writer.blob(Array(createdBy.utf8))
        writer.u16(UInt16(fields.count))
        for (id, field) in fields.sorted(by: { $0.key < $1.key }) {
            writer.u16(id)
            switch field {
            case .plain(let bytes): writer.u8(0); writer.blob(bytes)
            case .sealed(let bytes): writer.u8(1); writer.blob(bytes)
            }
        }
        writer.u16(UInt16(indexKeys.count))
        for key in indexKeys { writer.blob(key) }
        return writer.bytes
    }

    public init(
        entity: EntityCode, id: CRMID, owner: String, teams: [CRMID], subject: CRMID?, createdAtMillis: UInt64,
        createdBy: String
    ) {
        self.entity = entity
        self.id = id
        self.schema = Self.schemaVersion
        self.deleted = false
        self.owner = owner
        self.teams = teams
        self.subject = subject
        self.createdAtMillis = createdAtMillis
        self.createdBy = createdBy
        self.fields = [:]
        self.indexKeys = []
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let first = reader.u8(), let second = reader.u8(),
            let entity = EntityCode(rawValue: String(decoding: [first, second], as: UTF8.self)),
            let recordID = reader.crmID(),
            let schema = reader.u16(), let flags = reader.u8(), flags <= 1,
            let owner = reader.text(limit: Self.maxIdentityBytes), let teamCount = reader.u16(),
            teamCount <= CRMLimits.listItems
        else { return nil }
        var teams: [CRMID] = []
        for _ in 0..<teamCount {
            guard let team = reader.crmID() else { return nil }
            teams.append(team)
        }
        guard let hasSubject = reader.bool() else { return nil }
        var subject: CRMID?
        if hasSubject {
            guard let value = reader.crmID() else { return nil }
            subject = value
        }
        guard let created = reader.u64(), let createdBy = reader.text(limit: Self.maxIdentityBytes),
            let fieldCount = reader.u16(), fieldCount <= CRMLimits.fields
        else { return nil }
        self.init(
            entity: entity, id: recordID, owner: owner, teams: teams, subject: subject, createdAtMillis: created,
            createdBy: createdBy)
        self.schema = schema
        self.deleted = flags == 1
        for _ in 0..<fieldCount {
            guard let fieldID = reader.u16(), let form = reader.u8(), form <= 1,
                let value = reader.blob(limit: CRMLimits.recordBytes), fields[fieldID] == nil
            else { return nil }
            fields[fieldID] = form == 0 ? .plain(value) : .sealed(value)
        }
        guard let indexCount = reader.u16(), indexCount <= Self.maxIndexKeys else { return nil }
        for _ in 0..<indexCount {
            guard let key = reader.blob(limit: 256) else { return nil }
            indexKeys.append(key)
        }
        guard reader.isAtEnd else { return nil }
    }
}
