import BinaryCoding
import KVStore

/// Custom fields: an entity's definition is its standard fields plus the custom ones stored in
/// its metadata record (`c/<ws>/meta/<entity>`), replicated and versioned like any record. A
/// custom field is added, widened (longer texts, more items, a wider range, more choices, a new
/// purpose) or retired; its type, its id and whether it is personal never change, so every
/// value written under an older definition still fits the newer one.
extension RecordChanges {
    /// The definition of `entity` as this member's state has it.
    public func definition(_ entity: EntityCode) throws -> EntityDefinition {
        var definition = EntityCatalog.standard(entity)
        definition.fields += try customFields(entity).fields
        return definition
    }

    /// Adds the custom field `spec` to `entity`, or widens the one of that name (nil: it is
    /// already so). The id is the next unused one; the transaction is conditioned on the
    /// metadata version it read, so two concurrent changes cannot both apply.
    public func putField(_ entity: EntityCode, _ spec: FieldDefinition) throws -> Transaction? {
        try CustomFieldRules.check(spec)
        let standard = EntityCatalog.standard(entity)
        guard !standard.fields.contains(where: { $0.name == spec.name }) else {
            throw RecordError.badRequest("`\(spec.name)` is a standard field of \(entity.name)")
        }
        var (fields, version) = try customFields(entity)
        if let at = fields.firstIndex(where: { $0.name == spec.name }) {
            let current = fields[at]
            guard !current.retired else {
                throw RecordError.badRequest("`\(spec.name)` was retired; a retired field's name is not used again")
            }
            let wanted = current.widened(to: spec)
            guard let wanted else {
                throw RecordError.badRequest(
                    "`\(spec.name)` cannot change that way: its type and whether it is personal stay; texts, lists, "
                        + "ranges and choices may only grow")
            }
            guard wanted != current else { return nil }
            fields[at] = wanted
        } else {
            guard fields.count < CRMLimits.customFields else {
                throw RecordError.tooLarge(
                    "\(entity.name) has \(CRMLimits.customFields) custom fields (retired ones count)")
            }
            var added = spec
            added.id = (fields.map(\.id).max() ?? (CRMLimits.firstCustomField - 1)) + 1
            added.retired = false
            fields.append(added)
        }
        return metadataChange(entity, fields, version)
    }

    /// Takes the custom field `name` out of use (nil: it is retired already). Stored values stay
    /// until their record is next written, and are never read again.
    public func retireField(_ entity: EntityCode, name: String) throws -> Transaction? {
        var (fields, version) = try customFields(entity)
        guard let at = fields.firstIndex(where: { $0.name == name }) else {
            if EntityCatalog.standard(entity).field(named: name) != nil {
                throw RecordError.badRequest("`\(name)` is a standard field; only custom fields are retired")
            }
            throw RecordError.unknownField(entity: entity, name: name)
        }
        guard !fields[at].retired else { return nil }
        fields[at].retired = true
        return metadataChange(entity, fields, version)
    }

    /// The custom fields of `entity` and the version of their metadata record (nil: none yet).
    func customFields(_ entity: EntityCode) throws -> (fields: [FieldDefinition], version: UInt64?) {
        guard let stored = try kv.crmValue(CRMLayout.metadata(workspace: workspace, entity: entity)) else {
            return ([], nil)
        }
        guard let fields = CustomFieldCoding.decode(stored.payload) else {
            throw RecordError.keys(.doesNotOpen("the metadata of \(entity.name)"))
        }
        return (fields, stored.version)
    }

    private func metadataChange(
        _ entity: EntityCode, _ fields: [FieldDefinition], _ version: UInt64?
    ) -> Transaction {
        let key = CRMLayout.metadata(workspace: workspace, entity: entity)
        return Transaction(
            conditions: [version.map { .version(key: key, $0) } ?? .absent(key: key)],
            operations: [.putStamped(key: key, value: CustomFieldCoding.encode(fields))])
    }
}

/// What a custom field may be: a name and purpose of lower-case letters, digits and `_`; a
/// type of bounded size (no activity targets); a personal field with a purpose and no index.
public enum CustomFieldRules {
    public static let maxNameBytes = 48

    public static func check(_ field: FieldDefinition) throws {
        func refuse(_ why: String) -> RecordError { .badRequest("custom field `\(field.name)`: \(why)") }
        guard isIdentifier(field.name) else {
            throw RecordError.badRequest(
                "a custom field's name is 1 to \(maxNameBytes) characters: a-z first, then a-z, 0-9 or _")
        }
        if let purpose = field.purpose, !isIdentifier(purpose) {
            throw refuse("a purpose is 1 to \(maxNameBytes) characters: a-z first, then a-z, 0-9 or _")
        }
        guard !field.personal || field.purpose != nil else { throw refuse("a personal field needs a purpose") }
        guard field.lookup == nil, field.index == nil else { throw refuse("custom fields have no lookup or index") }
        let list = 1...CRMLimits.listItems
        switch field.type {
        case .text(let maxBytes): guard (1...CRMLimits.bodyBytes).contains(maxBytes) else { throw refuse("text size") }
        case .texts(let maxItems, let maxBytes):
            guard list.contains(maxItems), (1...CRMLimits.textBytes).contains(maxBytes) else {
                throw refuse("at most \(CRMLimits.listItems) items of at most \(CRMLimits.textBytes) bytes")
            }
        case .emails(let maxItems), .phones(let maxItems), .references(_, let maxItems):
            guard list.contains(maxItems) else { throw refuse("at most \(CRMLimits.listItems) items") }
        case .integer(let minimum, let maximum): guard minimum <= maximum else { throw refuse("min above max") }
        case .choice(let choices):
            guard (1...CRMLimits.choices).contains(choices.count), Set(choices).count == choices.count,
                choices.allSatisfy({
                    (1...64).contains($0.utf8.count) && !$0.unicodeScalars.contains { $0.value < 0x20 }
                })
            else { throw refuse("1 to \(CRMLimits.choices) distinct choices of 1 to 64 bytes") }
        case .money, .date, .timestamp, .bool, .reference: break
        case .targets: throw refuse("targets are an activity's standard field only")
        }
    }

    static func isIdentifier(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard (1...maxNameBytes).contains(bytes.count), (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[0])
        else { return false }
        return bytes.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "_")
        }
    }
}

extension FieldDefinition {
    /// This field as `spec` asks, if every value that fits this field fits that one too (nil:
    /// the change would strand stored values or change how they are kept).
    func widened(to spec: FieldDefinition) -> FieldDefinition? {
        guard spec.personal == personal, spec.type.holdsEverything(of: type) else { return nil }
        var field = self
        field.type = spec.type
        field.purpose = spec.purpose
        field.tracked = spec.tracked
        return field
    }
}

extension FieldType {
    /// Whether every value of `other` is a value of this type.
    func holdsEverything(of other: FieldType) -> Bool {
        switch (other, self) {
        case (.text(let a), .text(let b)): return b >= a
        case (.texts(let i, let a), .texts(let j, let b)): return j >= i && b >= a
        case (.emails(let i), .emails(let j)), (.phones(let i), .phones(let j)): return j >= i
        case (.references(let e, let i), .references(let f, let j)): return e == f && j >= i
        case (.integer(let lo, let hi), .integer(let newLo, let newHi)): return newLo <= lo && newHi >= hi
        case (.choice(let old), .choice(let new)): return Set(old).isSubset(of: Set(new))
        default: return other == self
        }
    }
}

/// The stored form of an entity's custom fields.
enum CustomFieldCoding {
    static let format: UInt8 = 1

    static func encode(_ fields: [FieldDefinition]) -> [UInt8] {
        var writer = BinaryWriter()
        writer.u8(format)
        writer.u16(UInt16(fields.count))
        for field in fields {
            writer.u16(field.id)
            writer.blob(Array(field.name.utf8))
            writer.u8((field.personal ? 1 : 0) | (field.retired ? 2 : 0) | (field.tracked ? 4 : 0))
            writer.optionalBlob(field.purpose.map { Array($0.utf8) })
            write(field.type, into: &writer)
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) -> [FieldDefinition]? {
        var reader = BinaryReader(bytes)
        guard reader.u8() == format, let count = reader.u16(), Int(count) <= CRMLimits.customFields else { return nil }
        var fields: [FieldDefinition] = []
        for _ in 0..<count {
            guard let id = reader.u16(), id >= CRMLimits.firstCustomField,
                let name = reader.text(limit: CustomFieldRules.maxNameBytes), let flags = reader.u8(), flags < 8,
                let purpose = reader.optionalBlob(limit: CustomFieldRules.maxNameBytes), let type = readType(&reader)
            else { return nil }
            let personal = flags & 1 != 0
            let purposeText = purpose.map { String(decoding: $0, as: UTF8.self) }
            guard !personal || purposeText != nil else { return nil }
            var field = FieldDefinition(id, name, type, personal: personal, purpose: purposeText)
            field.retired = flags & 2 != 0
            field.tracked = flags & 4 != 0
            fields.append(field)
        }
        return reader.isAtEnd ? fields : nil
    }

    private static func write(_ type: FieldType, into writer: inout BinaryWriter) {
        switch type {
        case .text(let maxBytes): writer.u8(1); writer.u32(UInt32(maxBytes))
        case .texts(let maxItems, let maxBytes):
            writer.u8(2); writer.u16(UInt16(maxItems)); writer.u32(UInt32(maxBytes))
        case .emails(let maxItems): writer.u8(3); writer.u16(UInt16(maxItems))
        case .phones(let maxItems): writer.u8(4); writer.u16(UInt16(maxItems))
        case .integer(let minimum, let maximum):
            writer.u8(5); writer.u64(UInt64(bitPattern: minimum)); writer.u64(UInt64(bitPattern: maximum))
        case .money: writer.u8(6)
        case .date: writer.u8(7)
        case .timestamp: writer.u8(8)
        case .bool: writer.u8(9)
        case .choice(let choices):
            writer.u8(10); writer.u16(UInt16(choices.count))
            for choice in choices { writer.blob(Array(choice.utf8)) }
        case .reference(let entity): writer.u8(11); writer.raw(Array(entity.rawValue.utf8))
        case .references(let entity, let maxItems):
            writer.u8(12); writer.raw(Array(entity.rawValue.utf8)); writer.u16(UInt16(maxItems))
        case .targets(let maxItems): writer.u8(13); writer.u16(UInt16(maxItems))
        }
    }

    private static func readType(_ reader: inout BinaryReader) -> FieldType? {
        func entity() -> EntityCode? {
            guard let first = reader.u8(), let second = reader.u8() else { return nil }
            return EntityCode(rawValue: String(decoding: [first, second], as: UTF8.self))
        }
        switch reader.u8() {
        case 1?: return reader.u32().map { .text(maxBytes: Int($0)) }
        case 2?:
            guard let items = reader.u16(), let bytes = reader.u32() else { return nil }
            return .texts(maxItems: Int(items), maxBytes: Int(bytes))
        case 3?: return reader.u16().map { .emails(maxItems: Int($0)) }
        case 4?: return reader.u16().map { .phones(maxItems: Int($0)) }
        case 5?:
            guard let low = reader.u64(), let high = reader.u64() else { return nil }
            return .integer(min: Int64(bitPattern: low), max: Int64(bitPattern: high))
        case 6?: return .money
        case 7?: return .date
        case 8?: return .timestamp
        case 9?: return .bool
        case 10?:
            guard let count = reader.u16(), Int(count) <= CRMLimits.choices else { return nil }
            var choices: [String] = []
            for _ in 0..<count {
                guard let choice = reader.text(limit: 64) else { return nil }
                choices.append(choice)
            }
            return .choice(choices)
        case 11?: return entity().map { .reference($0) }
        case 12?:
            guard let target = entity(), let items = reader.u16() else { return nil }
            return .references(target, maxItems: Int(items))
        case 13?: return reader.u16().map { .targets(maxItems: Int($0)) }
        default: return nil
        }
    }
}
