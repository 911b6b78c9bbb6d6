import CRM
import CRMProto
import GRPCCore

/// Records between their gRPC form and the CRM's: every value checked for its shape here (ids,
/// entities, calendar fields) and for its field's rules by the CRM, with errors that name the
/// field and never hold the value.
enum RecordsProto {
    static func entity(_ name: String) throws -> EntityCode {
        guard let entity = EntityCode(name: name) else {
            throw RPCError(
                code: .invalidArgument,
                message: "unknown entity; the entities are \(EntityCode.records.map(\.name).joined(separator: ", "))")
        }
        return entity
    }

    static func id(_ text: String, _ what: String = "id") throws -> CRMID {
        guard let id = CRMID(hex: text) else {
            throw RPCError(code: .invalidArgument, message: "`\(what)` must be 32 hexadecimal characters")
        }
        return id
    }

    static func values(_ fields: [String: Crm_V1_FieldValue]) throws -> [String: FieldValue] {
        guard fields.count <= CRMLimits.fields else {
            throw RPCError(code: .invalidArgument, message: "a record has at most \(CRMLimits.fields) fields")
        }
        var values: [String: FieldValue] = [:]
        for (name, proto) in fields { values[name] = try value(proto, field: name) }
        return values
    }

    static func value(_ proto: Crm_V1_FieldValue, field: String) throws -> FieldValue {
        func refuse(_ why: String) -> RPCError { RPCError(code: .invalidArgument, message: "field `\(field)` \(why)") }
        func listed<T>(_ items: [T]) throws -> [T] {
            guard items.count <= CRMLimits.listItems else { throw refuse("holds at most \(CRMLimits.listItems) items") }
            return items
        }
        switch proto.kind {
        case .text(let text)?: return .text(text)
        case .texts(let list)?: return .texts(try listed(list.items))
        case .integer(let number)?: return .integer(number)
        case .money(let money)?: return .money(micros: money.micros, currency: money.currency)
        case .date(let date)?:
            guard date.year <= 9999, date.month <= 12, date.day <= 31 else {
                throw refuse("is not a date in years 1 to 9999")
            }
            return .date(year: Int(date.year), month: Int(date.month), day: Int(date.day))
        case .timestampMillis(let millis)?: return .timestamp(millis: millis)
        case .boolean(let flag)?: return .bool(flag)
        case .reference(let text)?: return .reference(try id(text, field))
        case .references(let list)?: return .references(try listed(list.ids).map { try id($0, field) })
        case .targets(let list)?:
            return .targets(
                try listed(list.items).map { RecordRef(entity: try entity($0.entity), id: try id($0.id, field)) })
        case nil: throw refuse("has no value")
        }
    }

    static func proto(_ value: FieldValue) -> Crm_V1_FieldValue {
        var proto = Crm_V1_FieldValue()
        switch value {
        case .text(let text): proto.text = text
        case .texts(let items): proto.texts = .with { $0.items = items }
        case .integer(let number): proto.integer = number
        case .money(let micros, let currency):
            proto.money = .with {
                $0.micros = micros
                $0.currency = currency
            }
        case .date(let year, let month, let day):
            proto.date = .with {
                $0.year = UInt32(year)
                $0.month = UInt32(month)
                $0.day = UInt32(day)
            }
        case .timestamp(let millis): proto.timestampMillis = millis
        case .bool(let flag): proto.boolean = flag
        case .reference(let id): proto.reference = id.description
        case .references(let ids): proto.references = .with { $0.ids = ids.map(\.description) }
        case .targets(let refs):
            proto.targets = .with { list in
                list.items = refs.map { ref in
                    .with {
                        $0.entity = ref.entity.name
                        $0.id = ref.id.description
                    }
                }
            }
        }
        return proto
    }

    static func record(_ versioned: VersionedRecord, fields: [String: FieldValue]) -> Crm_V1_Record {
        var record = Crm_V1_Record()
        record.entity = versioned.record.entity.name
        record.id = versioned.record.id.description
        record.version = versioned.version
        record.updatedAtMillis = versioned.updatedAtMillis
        record.createdAtMillis = versioned.record.createdAtMillis
        record.owner = versioned.record.owner
        record.teams = versioned.record.teams.map(\.description)
        record.deleted = versioned.record.deleted
        record.fields = fields.mapValues(proto)
        return record
    }

    static func describe(_ definition: EntityDefinition) -> Crm_V1_DescribeResponse {
        var response = Crm_V1_DescribeResponse()
        response.entity = definition.code.name
        response.fields = definition.fields.map { field in
            var description = Crm_V1_FieldDescription()
            description.name = field.name
            description.type = typeName(field.type)
            description.personal = field.personal
            description.lookup = field.lookup.map { lookupName($0) } ?? ""
            description.index = field.index.map { "\($0)" } ?? ""
            description.purpose = field.purpose ?? ""
            description.custom = field.isCustom
            description.tracked = FieldHistory.tracks(field)
            return description
        }
        return response
    }

    /// A custom field as `PutField` asks for it (its id is given when it is added).
    static func fieldSpec(_ message: Crm_V1_PutFieldRequest) throws -> FieldDefinition {
        func refuse(_ why: String) -> RPCError { RPCError(code: .invalidArgument, message: why) }
        let items = message.maxItems == 0 ? CRMLimits.listItems : Int(message.maxItems)
        let type: FieldType
        switch message.type {
        case "text": type = .text(maxBytes: message.maxBytes == 0 ? CRMLimits.textBytes : Int(message.maxBytes))
        case "texts": type = .texts(maxItems: items, maxBytes: message.maxBytes == 0 ? 256 : Int(message.maxBytes))
        case "emails": type = .emails(maxItems: items)
        case "phones": type = .phones(maxItems: items)
        case "integer":
            type = .integer(
                min: message.hasMin ? message.min : .min, max: message.hasMax ? message.max : .max)
        case "money": type = .money
        case "date": type = .date
        case "timestamp": type = .timestamp
        case "boolean": type = .bool
        case "choice":
            guard message.choices.count <= CRMLimits.choices else {
                throw refuse("a choice field has at most \(CRMLimits.choices) choices")
            }
            type = .choice(message.choices)
        case "reference": type = .reference(try entity(message.targetEntity))
        case "references": type = .references(try entity(message.targetEntity), maxItems: items)
        default:
            throw refuse(
                "`type` is text, texts, emails, phones, integer, money, date, timestamp, boolean, choice, reference "
                    + "or references")
        }
        guard message.type == "choice" || message.choices.isEmpty else {
            throw refuse("only a choice field has choices")
        }
        guard ["reference", "references"].contains(message.type) || message.targetEntity.isEmpty else {
            throw refuse("only a reference field has a target entity")
        }
        var field = FieldDefinition(0, message.name, type)
        field.personal = message.personal
        field.purpose = message.purpose.isEmpty ? nil : message.purpose
        field.tracked = message.trackHistory
        return field
    }

    /// A list request as the CRM's query (`owner` `me` is the caller).
    static func listQuery(_ message: Crm_V1_ListRecordsRequest, caller: String) throws -> ListQuery {
        let entity = try entity(message.entity)
        guard let index = message.by.isEmpty ? ListIndex.all : ListIndex(rawValue: message.by) else {
            throw RPCError(
                code: .invalidArgument,
                message: "`by` is one of \(ListIndex.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard message.value.utf8.count <= CRMLimits.textBytes else {
            throw RPCError(code: .invalidArgument, message: "`value` is at most \(CRMLimits.textBytes) bytes")
        }
        let value = index == .owner && message.value == "me" ? caller : message.value
        return ListQuery(
            entity: entity, index: index, value: value.isEmpty ? nil : value, filters: try values(message.filters),
            includeDeleted: message.includeDeleted,
            pageSize: message.pageSize == 0 ? ListQuery.defaultPageSize : Int(message.pageSize))
    }

    static func lookup(_ name: String) throws -> FieldLookup {
        switch name {
        case "email": return .email
        case "phone": return .phone
        case "name": return .name
        case "domain": return .domain
        default: throw RPCError(code: .invalidArgument, message: "`by` is email, phone, name or domain")
        }
    }

    private static func lookupName(_ lookup: FieldLookup) -> String {
        switch lookup {
        case .email: return "email"
        case .phone: return "phone"
        case .name: return "name"
        case .domain: return "domain"
        case .username: return "username"
        }
    }

    private static func typeName(_ type: FieldType) -> String {
        switch type {
        case .text: return "text"
        case .texts: return "texts"
        case .emails: return "emails"
        case .phones: return "phones"
        case .integer: return "integer"
        case .money: return "money"
        case .date: return "date"
        case .timestamp: return "timestamp"
        case .bool: return "boolean"
        case .choice(let choices): return "choice(" + choices.joined(separator: "|") + ")"
        case .reference(let entity): return "reference(\(entity.name))"
        case .references(let entity, _): return "references(\(entity.name))"
        case .targets: return "targets"
        }
    }
}
