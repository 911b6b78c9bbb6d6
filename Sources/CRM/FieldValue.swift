import BinaryCoding
import Foundation

/// A record of another entity (an activity's target).
public struct RecordRef: Hashable, Sendable {
    public var entity: EntityCode
    public var id: CRMID

    public init(entity: EntityCode, id: CRMID) {
        self.entity = entity
        self.id = id
    }
}

/// A field's value, checked against its field's type and bounds before anything is written.
public enum FieldValue: Equatable, Sendable {
    case text(String)
    case texts([String])
    case integer(Int64)
    case money(micros: Int64, currency: String)
    case date(year: Int, month: Int, day: Int)
    case timestamp(millis: UInt64)
    case bool(Bool)
    case reference(CRMID)
    case references([CRMID])
    case targets([RecordRef])

    /// The value made canonical for `field` (e-mails and phones normalised, texts in NFC), or
    /// why it does not fit. Messages name the field, never its value.
    public func validated(for field: FieldDefinition) throws -> FieldValue {
        func refuse(_ why: String) -> FieldError { FieldError(field: field.name, reason: why) }
        switch (field.type, self) {
        case (.text(let maxBytes), .text(let text)):
            return .text(try Self.checkedText(text, maxBytes: maxBytes, refuse))
        case (.texts(let maxItems, let maxBytes), .texts(let items)):
            guard items.count <= maxItems else { throw refuse("holds at most \(maxItems) items") }
            return .texts(try items.map { try Self.checkedText($0, maxBytes: maxBytes, refuse) })
        case (.emails(let maxItems), .texts(let items)):
            guard items.count <= maxItems else { throw refuse("holds at most \(maxItems) items") }
            return .texts(
                try items.map { item in
                    guard let email = Normalise.email(item) else { throw refuse("holds an invalid e-mail address") }
                    return email
                })
        case (.phones(let maxItems), .texts(let items)):
            guard items.count <= maxItems else { throw refuse("holds at most \(maxItems) items") }
            return .texts(
                try items.map { item in
                    guard let phone = Normalise.phone(item) else {
                        throw refuse("holds a phone number that is not in E.164 form (+ and 8 to 15 digits)")
                    }
                    return phone
                })
        case (.integer(let minimum, let maximum), .integer(let number)):
            guard (minimum...maximum).contains(number) else { throw refuse("must be \(minimum) to \(maximum)") }
            return self
        case (.money, .money(let micros, let currency)):
            guard currency.utf8.count == 3, currency.utf8.allSatisfy({ (65...90).contains($0) }) else {
                throw refuse("needs an ISO 4217 currency code (three capital letters)")
            }
            guard micros > Int64.min else { throw refuse("is out of range") }
            return self
        case (.date, .date(let year, let month, let day)):
            guard Self.isDate(year: year, month: month, day: day) else {
                throw refuse("is not a date in years 1 to 9999")
            }
            return self
        case (.timestamp, .timestamp(let millis)):
            guard millis <= Self.maxTimestampMillis else { throw refuse("is after the year 9999") }
            return self
        case (.bool, .bool):
            return self
        case (.choice(let choices), .text(let text)):
            guard choices.contains(text) else { throw refuse("must be one of \(choices.joined(separator: ", "))") }
            return self
        case (.reference, .reference):
            return self
        case (.references(_, let maxItems), .references(let ids)):
            guard ids.count <= maxItems else { throw refuse("holds at most \(maxItems) items") }
            return self
        case (.targets(let maxItems), .targets(let refs)):
            guard refs.count <= maxItems else { throw refuse("holds at most \(maxItems) items") }
            guard refs.allSatisfy({ EntityCode.records.contains($0.entity) }) else {
                throw refuse("may target persons, companies, deals and activities only")
            }
            return self
        default:
            throw refuse("has the wrong type")
        }
    }

    /// Year 9999, December 31, end of day, in milliseconds since 1970.
    static let maxTimestampMillis: UInt64 = 253_402_300_799_999

    private static func checkedText(
        _ text: String, maxBytes: Int, _ refuse: (String) -> FieldError
    ) throws -> String {
        let canonical = text.precomposedStringWithCanonicalMapping
        guard canonical.utf8.count <= maxBytes else { throw refuse("is longer than \(maxBytes) bytes") }
        guard !canonical.unicodeScalars.contains(where: { $0.value == 0 }) else {
            throw refuse("holds a NUL character")
        }
        return canonical
    }

    static func isDate(year: Int, month: Int, day: Int) -> Bool {
        guard (1...9999).contains(year), (1...12).contains(month), day >= 1 else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        return day <= days[month - 1]
    }

    // MARK: Encoding

    func write(into writer: inout BinaryWriter) {
        switch self {
        case .text(let text): writer.u8(1); writer.blob(Array(text.utf8))
        case .texts(let items):
            writer.u8(2); writer.u16(UInt16(items.count))
            for item in items { writer.blob(Array(item.utf8)) }
        case .integer(let number): writer.u8(3); writer.u64(UInt64(bitPattern: number))
        case .money(let micros, let currency):
            writer.u8(4); writer.u64(UInt64(bitPattern: micros)); writer.blob(Array(currency.utf8))
        case .date(let year, let month, let day):
            writer.u8(5); writer.u16(UInt16(year)); writer.u8(UInt8(month)); writer.u8(UInt8(day))
        case .timestamp(let millis): writer.u8(6); writer.u64(millis)
        case .bool(let value): writer.u8(7); writer.bool(value)
        case .reference(let id): writer.u8(8); writer.raw(id.bytes)
        case .references(let ids):
            writer.u8(9); writer.u16(UInt16(ids.count))
            for id in ids { writer.raw(id.bytes) }
        case .targets(let refs):
            writer.u8(10); writer.u16(UInt16(refs.count))
            for ref in refs { writer.raw(Array(ref.entity.rawValue.utf8)); writer.raw(ref.id.bytes) }
        }
    }

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        write(into: &writer)
        return writer.bytes
    }

    init?(reading reader: inout BinaryReader) {
        switch reader.u8() {
        case 1?:
            guard let text = reader.text(limit: CRMLimits.bodyBytes) else { return nil }
            self = .text(text)
        case 2?:
            guard let count = reader.u16(), count <= CRMLimits.listItems else { return nil }
            var items: [String] = []
            for _ in 0..<count {
                guard let item = reader.text(limit: CRMLimits.textBytes) else { return nil }
                items.append(item)
            }
            self = .texts(items)
        case 3?:
            guard let raw = reader.u64() else { return nil }
            self = .integer(Int64(bitPattern: raw))
        case 4?:
            guard let raw = reader.u64(), let currency = reader.text(limit: 3) else { return nil }
            self = .money(micros: Int64(bitPattern: raw), currency: currency)
        case 5?:
            guard let year = reader.u16(), let month = reader.u8(), let day = reader.u8() else { return nil }
            self = .date(year: Int(year), month: Int(month), day: Int(day))
        case 6?:
            guard let millis = reader.u64() else { return nil }
            self = .timestamp(millis: millis)
        case 7?:
            guard let value = reader.bool() else { return nil }
            self = .bool(value)
        case 8?:
            guard let id = reader.crmID() else { return nil }
            self = .reference(id)
        case 9?:
            guard let count = reader.u16(), count <= CRMLimits.listItems else { return nil }
            var ids: [CRMID] = []
            for _ in 0..<count {
                guard let next = reader.crmID() else { return nil }
                ids.append(next)
            }
            self = .references(ids)
        case 10?:
            guard let count = reader.u16(), count <= CRMLimits.listItems else { return nil }
            var refs: [RecordRef] = []
            for _ in 0..<count {
                guard let first = reader.u8(), let second = reader.u8(),
                    let entity = EntityCode(rawValue: String(decoding: [first, second], as: UTF8.self)),
                    let target = reader.crmID()
                else { return nil }
                refs.append(RecordRef(entity: entity, id: target))
            }
            self = .targets(refs)
        default:
            return nil
        }
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        self.init(reading: &reader)
        guard reader.isAtEnd else { return nil }
    }
}

/// A field value that does not fit its field: names the field and the rule, never the value.
public struct FieldError: Error, Equatable, Sendable, CustomStringConvertible {
    public var field: String
    public var reason: String
    public var description: String { "field `\(field)` \(reason)" }
}

/// The canonical forms that lookup tokens are made of, so that equal values find each other.
public enum Normalise {
    /// NFKC, trimmed, lower-cased; one `@` between a non-empty local part and a dotted domain;
    /// at most 254 bytes.
    public static func email(_ text: String) -> String? {
        let value = text.precomposedStringWithCompatibilityMapping.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = value.split(separator: "@", omittingEmptySubsequences: false)
        guard value.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
            !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
            !value.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 })
        else { return nil }
        return value
    }

    /// E.164: a `+` and 8 to 15 digits, the first not 0; spaces, dashes, dots and parentheses
    /// are dropped. Numbers without a country code are refused (no default region is guessed).
    public static func phone(_ text: String) -> String? {
        let kept = text.unicodeScalars.filter { !" -.()\u{A0}".unicodeScalars.contains($0) }
        guard kept.first == "+" else { return nil }
        let digits = kept.dropFirst()
        guard (8...15).contains(digits.count), digits.allSatisfy({ ("0"..."9").contains($0) }), digits.first != "0"
        else { return nil }
        return "+" + String(String.UnicodeScalarView(digits))
    }

    /// NFKC, lower-cased, runs of white space made one space, trimmed.
    public static func name(_ text: String) -> String {
        text.precomposedStringWithCompatibilityMapping.lowercased()
            .split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// A username: NFKC, lower-cased, trimmed; 3 to 64 letters, digits, `.`, `_`, `-` or `@`, so
    /// that names differing only by case or Unicode form are one name.
    public static func username(_ text: String) -> String? {
        let value = text.precomposedStringWithCompatibilityMapping.trimmingCharacters(in: .whitespaces).lowercased()
        guard (3...64).contains(value.unicodeScalars.count), value.utf8.count <= 256,
            value.unicodeScalars.allSatisfy({
                $0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_@".unicodeScalars.contains($0)
            })
        else { return nil }
        return value
    }

    /// Lower-cased and trimmed, without a trailing dot; letters, digits, dashes and dots only.
    public static func domain(_ text: String) -> String? {
        var value = text.trimmingCharacters(in: .whitespaces).lowercased()
        if value.hasSuffix(".") { value.removeLast() }
        guard !value.isEmpty, value.utf8.count <= 253, value.contains("."),
            value.unicodeScalars.allSatisfy({
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "."
            })
        else { return nil }
        return value
    }
}
