/// The CRM's entities and their fields: what each field holds, whether it is personal data (and
/// then sealed under its subject's key), and how it is found (a lookup token of its normalised
/// value, or a secondary index on a non-personal value). Custom fields are metadata too: they
/// are added to an entity's definition, never to code.
public enum EntityCode: String, CaseIterable, Sendable, Codable {
    case person = "pe"
    case company = "co"
    case deal = "de"
    case activity = "ac"
    /// Staff who sign in: records too (their personal fields sealed under their own subject
    /// key), but kept by the directory, never through the records API or roles' objects.
    case user = "us"

    /// The entities of the records API (and of roles' object actions).
    public static let records: [EntityCode] = [.person, .company, .deal, .activity]

    /// The name used in APIs and URLs.
    public var name: String {
        switch self {
        case .person: return "person"
        case .company: return "company"
        case .deal: return "deal"
        case .activity: return "activity"
        case .user: return "user"
        }
    }

    /// The records API's entity called `name` (users are not one).
    public init?(name: String) {
        guard let code = Self.records.first(where: { $0.name == name }) else { return nil }
        self = code
    }
}

/// What a field holds, with its bounds.
public enum FieldType: Equatable, Sendable {
    case text(maxBytes: Int)
    case texts(maxItems: Int, maxBytes: Int)
    /// E-mail addresses (normalised: NFKC, trimmed, lower-cased).
    case emails(maxItems: Int)
    /// Phone numbers in E.164 (`+` and 8 to 15 digits; separators dropped).
    case phones(maxItems: Int)
    case integer(min: Int64, max: Int64)
    /// An amount in millionths of a currency unit, with an ISO 4217 currency code.
    case money
    /// A calendar date, years 1 to 9999.
    case date
    /// Milliseconds since 1970 (years up to 9999).
    case timestamp
    case bool
    case choice([String])
    case reference(EntityCode)
    case references(EntityCode, maxItems: Int)
    /// Records of any entity (an activity's targets).
    case targets(maxItems: Int)
}

/// How a field's values are found.
public enum FieldLookup: String, Sendable {
    case email = "em"
    case phone = "ph"
    case name = "nm"
    case domain = "cd"
    /// A user's sign-in name: unique (a guard entry without the id makes a second one fail).
    case username = "un"
}

/// A secondary index on a non-personal field: its values (ids, choices, dates) appear in keys.
public enum FieldIndex: String, Sendable {
    case company = "co"
    case stage = "st"
    case status = "ss"
    case due = "du"
    case assignee = "as"
    case target = "tg"
    case contact = "pc"
}

public struct FieldDefinition: Equatable, Sendable {
    public var id: UInt16
    public var name: String
    public var type: FieldType
    /// Personal data: sealed under the subject's key, never in a key, a log or a URL.
    public var personal: Bool
    /// Why the field is kept (a purpose id): every personal field declares one, so that the
    /// record of processing and retention can name it.
    public var purpose: String?
    public var lookup: FieldLookup?
    public var index: FieldIndex?
    /// Its changes are kept in the record's field history (`FieldHistory`), as personal
    /// fields' always are.
    public var tracked: Bool
    /// A custom field taken out of use: refused in writes, absent from reads; its id and name
    /// are never given to another field.
    public var retired = false

    public init(
        _ id: UInt16, _ name: String, _ type: FieldType, personal: Bool = false, purpose: String? = nil,
        lookup: FieldLookup? = nil, index: FieldIndex? = nil, tracked: Bool = false
    ) {
        precondition(index == nil || !personal, "personal values are never in an index key")
        precondition(!personal || purpose != nil, "a personal field declares its purpose")
        self.id = id
        self.name = name
        self.type = type
        self.personal = personal
        self.purpose = purpose
        self.lookup = lookup
        self.index = index
        self.tracked = tracked
    }

    public var isCustom: Bool { id >= CRMLimits.firstCustomField }
}

public enum CRMLimits {
    public static let recordBytes = 256 << 10
    public static let fields = 200
    public static let textBytes = 4096
    public static let bodyBytes = 64 << 10
    public static let listItems = 20
    /// Custom fields are numbered from here; standard ones below.
    public static let firstCustomField: UInt16 = 1000
    /// Custom fields an entity may have, retired ones included (their ids stay taken).
    public static let customFields = 100
    public static let choices = 64
    /// Teams a record (or a user) belongs to.
    public static let teams = 20
}

public struct EntityDefinition: Sendable {
    public var code: EntityCode
    /// Standard fields, then custom ones (retired ones included).
    public var fields: [FieldDefinition]

    /// The field in use called `name` (a retired field is not).
    public func field(named name: String) -> FieldDefinition? { fields.first { $0.name == name && !$0.retired } }
    /// The field in use with `id` (a retired field is not).
    public func field(id: UInt16) -> FieldDefinition? { fields.first { $0.id == id && !$0.retired } }
    public var fieldsInUse: [FieldDefinition] { fields.filter { !$0.retired } }
    /// The ids of the fields in use called `names`, in order (names of no field left out).
    public func ids(of names: some Sequence<String>) -> [UInt16] { names.compactMap { field(named: $0)?.id } }

    /// Whose key seals this entity's personal fields.
    public var sealsUnderOwnSubject: Bool { code == .person || code == .user }
}

/// The standard entities (as Twenty's person, company, opportunity and note/task objects).
public enum EntityCatalog {
    private static let text = FieldType.text(maxBytes: CRMLimits.textBytes)
    private static let list = CRMLimits.listItems
    /// The purpose of the standard personal fields: keeping the customer relationship.
    public static let relationship = "customer_relationship"
    /// The purpose of users' personal fields: running the staff's accounts.
    public static let staff = "staff_accounts"

    public static func standard(_ code: EntityCode) -> EntityDefinition {
        switch code {
        case .person:
            return EntityDefinition(
                code: code,
                fields: [
                    FieldDefinition(1, "first_name", text, personal: true, purpose: relationship, lookup: .name),
                    FieldDefinition(2, "last_name", text, personal: true, purpose: relationship, lookup: .name),
                    FieldDefinition(
                        3, "emails", .emails(maxItems: list), personal: true, purpose: relationship, lookup: .email),
                    FieldDefinition(
                        4, "phones", .phones(maxItems: list), personal: true, purpose: relationship, lookup: .phone),
                    FieldDefinition(5, "job_title", text, personal: true, purpose: relationship),
                    FieldDefinition(6, "city", text, personal: true, purpose: relationship),
                    FieldDefinition(7, "address", text, personal: true, purpose: relationship),
                    FieldDefinition(8, "linkedin", text, personal: true, purpose: relationship),
                    FieldDefinition(9, "avatar_url", text, personal: true, purpose: relationship),
                    FieldDefinition(10, "birthday", .date, personal: true, purpose: relationship),
                    FieldDefinition(20, "company_id", .reference(.company), index: .company),
                    FieldDefinition(21, "source", text),
                    FieldDefinition(22, "tags", .texts(maxItems: list, maxBytes: 64)),
                    FieldDefinition(23, "do_not_contact", .bool),
                    FieldDefinition(
                        24, "lifecycle_stage", .choice(["lead", "prospect", "customer", "former"]), index: .stage),
                ])
        case .company:
            return EntityDefinition(
                code: code,
                fields: [
                    FieldDefinition(1, "name", text, lookup: .name),
                    FieldDefinition(2, "domain", text, lookup: .domain),
                    FieldDefinition(3, "employees", .integer(min: 0, max: 10_000_000)),
                    FieldDefinition(4, "industry", text),
                    FieldDefinition(5, "address", text),
                    FieldDefinition(6, "annual_revenue", .money),
                    FieldDefinition(7, "icp", .bool),
                ])
        case .deal:
            return EntityDefinition(
                code: code,
                fields: [
                    FieldDefinition(1, "name", text),
                    FieldDefinition(2, "amount", .money, tracked: true),
                    FieldDefinition(
                        3, "stage", .choice(["new", "qualified", "proposal", "negotiation", "won", "lost"]),
                        index: .stage, tracked: true),
                    FieldDefinition(4, "close_date", .date, index: .due),
                    FieldDefinition(5, "probability", .integer(min: 0, max: 100)),
                    FieldDefinition(6, "company_id", .reference(.company), index: .company),
                    FieldDefinition(7, "point_of_contact", .reference(.person), index: .contact),
                ])
        case .user:
            return EntityDefinition(
                code: code,
                fields: [
                    FieldDefinition(
                        1, "username", .text(maxBytes: 64), personal: true, purpose: staff, lookup: .username),
                    FieldDefinition(2, "display_name", text, personal: true, purpose: staff),
                    FieldDefinition(3, "email", .emails(maxItems: 1), personal: true, purpose: staff, lookup: .email),
                    FieldDefinition(4, "status", .choice(["active", "disabled"])),
                    FieldDefinition(5, "roles", .texts(maxItems: list, maxBytes: 64)),
                ])
        case .activity:
            return EntityDefinition(
                code: code,
                fields: [
                    FieldDefinition(1, "kind", .choice(["note", "task", "call", "meeting"])),
                    FieldDefinition(2, "title", text, personal: true, purpose: relationship),
                    FieldDefinition(
                        3, "body", .text(maxBytes: CRMLimits.bodyBytes), personal: true, purpose: relationship),
                    FieldDefinition(4, "due_at", .timestamp, index: .due),
                    FieldDefinition(5, "status", .choice(["open", "done", "cancelled"]), index: .status),
                    FieldDefinition(6, "assignee", .reference(.person), index: .assignee),
                    FieldDefinition(7, "targets", .targets(maxItems: list), index: .target),
                ])
        }
    }
}
