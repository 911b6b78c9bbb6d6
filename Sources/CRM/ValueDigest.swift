import BinaryCoding
import Sealing

/// A written personal value as the audit trail keeps it: 16 bytes of HMAC-SHA-256 under the data
/// subject's key over the record, the field and the value. Whoever holds the subject's key (the
/// CRM, while the subject exists) can tell whether an entry wrote a given value; nobody can read
/// the value from it, and once the subject is erased nobody can check it at all.
public struct ValueDigest: Equatable, Sendable {
    public static let byteCount = 16
    public var field: UInt16
    public var digest: [UInt8]

    public init(field: UInt16, digest: [UInt8]) {
        precondition(digest.count == Self.byteCount, "a value digest is 16 bytes")
        self.field = field
        self.digest = digest
    }

    public static func of(
        _ value: FieldValue, field: UInt16, record: CRMID, under subjectKey: SymmetricKey
    ) -> ValueDigest {
        var writer = BinaryWriter()
        writer.raw(Array("crm.audit.value.v1".utf8))
        writer.raw(record.bytes)
        writer.u16(field)
        writer.raw(value.encoded)
        return ValueDigest(
            field: field, digest: Array(HMACSHA256.authenticate(writer.bytes, key: subjectKey).prefix(byteCount)))
    }
}

extension RecordChanges {
    /// Digests of the personal values of `input` written to `record` (validated as the write
    /// stores them), under the key of `subject` (nil: the subject the write gives a new record;
    /// `subjectKey` when the write makes it). None when the key does not exist yet.
    public func valueDigests(
        _ input: [String: FieldValue], entity: EntityCode, record: CRMID, subject: CRMID?,
        subjectKey given: SymmetricKey? = nil
    ) throws -> [ValueDigest] {
        let definition = try definition(entity)
        let personal = try input.sorted { $0.key < $1.key }.compactMap { name, value -> (UInt16, FieldValue)? in
            guard let field = definition.field(named: name), field.personal else { return nil }
            return (field.id, try value.validated(for: field))
        }
        guard !personal.isEmpty else { return [] }
        let subject = subject ?? (definition.sealsUnderOwnSubject ? record : subjectOf(input))
        guard
            let key = try given ?? subjectKeyIfPresent(subject)
        else { return [] }
        return personal.map { ValueDigest.of($0.1, field: $0.0, record: record, under: key) }
    }
}
