import BinaryCoding
import Sealing

/// A 128-bit random id (records, subjects): never derived from personal data, so it may appear
/// in keys, logs and URLs.
public struct CRMID: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 16
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    public init?(hex: some StringProtocol) {
        guard hex.count == 2 * Self.byteCount, let bytes = [UInt8](hexString: hex) else { return nil }
        self.bytes = bytes
    }

    public static func random() throws -> CRMID { CRMID(bytes: try SecureRandom.bytes(byteCount))! }

    public var description: String { bytes.hexString }
}

extension BinaryReader {
    /// A 128-bit id, or nil at the end of the input.
    mutating func crmID() -> CRMID? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(CRMID.byteCount)
        for _ in 0..<CRMID.byteCount {
            guard let byte = u8() else { return nil }
            bytes.append(byte)
        }
        return CRMID(bytes: bytes)
    }
}

/// Each data subject (a person, later each user) has its own random key. Only its wrapped form
/// (under the vault key of a key-set version) is replicated; every personal field of the
/// subject is sealed under it, so deleting the wrapped key erases all of them at once.
public enum SubjectKeys {
    /// The wrapped form: key-set version ‖ nonce ‖ sealed key ‖ tag.
    public static func wrap(
        _ key: SymmetricKey, subject: CRMID, workspace: UInt32, under set: CRMKeySet
    ) throws -> [UInt8] {
        var material = key.withUnsafeBytes { Array($0) }
        defer { scrub(&material) }
        var writer = BinaryWriter(capacity: 8 + Sealed.overheadBytes + SymmetricKey.byteCount)
        writer.u64(set.version)
        writer.raw(
            try Sealed.seal(
                material, under: set.key(.vault),
                binding: binding(subject: subject, workspace: workspace, version: set.version)))
        return writer.bytes
    }

    /// The key-set version a wrapped key is under.
    public static func version(of wrapped: [UInt8]) -> UInt64? {
        var reader = BinaryReader(wrapped)
        return reader.u64()
    }

    public static func unwrap(
        _ wrapped: [UInt8], subject: CRMID, workspace: UInt32, keySets: (UInt64) -> CRMKeySet?
    ) throws -> SymmetricKey {
        var reader = BinaryReader(wrapped)
        guard let version = reader.u64() else { throw CRMKeyError.doesNotOpen("a subject key") }
        guard let set = keySets(version) else { throw CRMKeyError.unknownKeySet(version: version) }
        guard
            var material = try Sealed.open(
                reader.rest(), under: set.key(.vault),
                binding: binding(subject: subject, workspace: workspace, version: version)),
            material.count == SymmetricKey.byteCount
        else { throw CRMKeyError.doesNotOpen("subject \(subject)'s key") }
        defer { scrub(&material) }
        return SymmetricKey(copying: material)
    }

    private static func binding(subject: CRMID, workspace: UInt32, version: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.raw(Array("crm.sk.v1".utf8))
        writer.u32(workspace)
        writer.raw(subject.bytes)
        writer.u64(version)
        return writer.bytes
    }
}

/// Where a personal field's value lives: a ciphertext opens only in the workspace, entity,
/// record and field it was sealed for (moved anywhere else, it does not open).
public struct FieldPlace: Equatable, Sendable {
    public var workspace: UInt32
    /// The entity's two-letter code (`pe`, `co`, ...).
    public var entity: String
    public var record: CRMID
    public var field: UInt16

    public init(workspace: UInt32, entity: String, record: CRMID, field: UInt16) {
        precondition(entity.utf8.count == 2, "entity codes are two letters")
        self.workspace = workspace
        self.entity = entity
        self.record = record
        self.field = field
    }

    var binding: [UInt8] {
        var writer = BinaryWriter()
        writer.raw(Array("crm.field.v1".utf8))
        writer.u32(workspace)
        writer.raw(Array(entity.utf8))
        writer.raw(record.bytes)
        writer.u16(field)
        return writer.bytes
    }
}

/// Personal fields, each sealed separately under its subject's key.
public enum FieldSealing {
    public static func seal(_ value: [UInt8], at place: FieldPlace, under key: SymmetricKey) throws -> [UInt8] {
        try Sealed.seal(value, under: key, binding: place.binding)
    }

    public static func open(_ sealed: [UInt8], at place: FieldPlace, under key: SymmetricKey) throws -> [UInt8] {
        guard let value = try Sealed.open(sealed, under: key, binding: place.binding) else {
            throw CRMKeyError.doesNotOpen("field \(place.field) of \(place.entity) \(place.record)")
        }
        return value
    }
}
