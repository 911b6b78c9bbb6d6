import BinaryCoding
import Sealing

/// One version of the cluster-wide CRM keys: random keys made by the member that proposes the
/// version, replicated only in wrapped form (under the CRM key-encryption key, which every
/// member holds and none replicates), and unwrapped by each member when it loads them.
public final class CRMKeySet: Sendable {
    /// What each key of a set is for.
    public enum Purpose: Int, CaseIterable, Sendable {
        /// Wraps each subject's own key.
        case vault
        /// Keys the lookup tokens of personal values (equality search without plaintext).
        case lookup
        /// Wraps sign-in secrets (second factors).
        case secrets
        /// The password pepper.
        case pepper
        /// Seals page tokens.
        case cursor
        /// Keys pseudonyms in analytics exports.
        case pseudonym
        /// Seals personal fields that belong to no person (a sole trader's company).
        case workspace
    }

    public let version: UInt64
    private let keys: [SymmetricKey]

    private init(version: UInt64, keys: [SymmetricKey]) {
        precondition(version > 0 && keys.count == Purpose.allCases.count)
        self.version = version
        self.keys = keys
    }

    public func key(_ purpose: Purpose) -> SymmetricKey { keys[purpose.rawValue] }

    /// A fresh set of random keys.
    public static func generate(version: UInt64) throws -> CRMKeySet {
        CRMKeySet(version: version, keys: try Purpose.allCases.map { _ in try SymmetricKey.generate() })
    }

    /// Keys a rotation keeps: the lookup key (every index entry and lookup token is made with
    /// it; changing it takes a re-index of every record, a job of its own) and the pepper (a
    /// password hash made with it is checked until the user's next sign-in re-hashes it).
    public static let carriedByRotation: Set<Purpose> = [.lookup, .pepper]

    /// The set that follows `previous`: fresh random keys, but for those a rotation carries.
    public static func successor(of previous: CRMKeySet) throws -> CRMKeySet {
        CRMKeySet(
            version: previous.version + 1,
            keys: try Purpose.allCases.map {
                carriedByRotation.contains($0) ? previous.key($0) : try SymmetricKey.generate()
            })
    }

    /// A short public digest that names this set's material: a member that unwraps a set checks
    /// it, so a set unwrapped under a wrong key is never used.
    var checkValue: [UInt8] {
        Array(HMACSHA256.authenticate(Array("crm.keyset.check.v1".utf8), key: key(.vault)).prefix(8))
    }

    private static let recordFormat: UInt8 = 1

    private static func context(_ version: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.raw(Array("crm.keyset.v1".utf8))
        writer.u64(version)
        return writer.bytes
    }

    /// The replicated record: format ‖ key-encryption key id ‖ wrapped keys ‖ check value.
    public func record(wrappedBy kek: any MasterKeyProvider) throws -> [UInt8] {
        var material = [UInt8]()
        material.reserveCapacity(keys.count * SymmetricKey.byteCount)
        for key in keys { key.withUnsafeBytes { material += $0 } }
        defer { scrub(&material) }
        let wrapped: [UInt8]
        do {
            wrapped = try material.withUnsafeBytes { try kek.wrap($0, context: Self.context(version)) }
        } catch {
            throw CRMKeyError.keyUnavailable("\(error)")
        }
        var writer = BinaryWriter(capacity: wrapped.count + 64)
        writer.u8(Self.recordFormat)
        writer.blob(Array(kek.keyID.utf8))
        writer.blob(wrapped)
        writer.raw(checkValue)
        return writer.bytes
    }

    /// Opens a replicated record of version `version` with this member's key-encryption key.
    public static func open(record: [UInt8], version: UInt64, kek: any MasterKeyProvider) throws -> CRMKeySet {
        var reader = BinaryReader(record)
        guard reader.u8() == recordFormat, let keyID = reader.text(limit: 256), let wrapped = reader.blob(limit: 4096)
        else { throw CRMKeyError.keySetDamaged(version: version, reason: "the record does not decode") }
        let check = reader.rest()
        guard check.count == 8 else {
            throw CRMKeyError.keySetDamaged(version: version, reason: "the record has no check value")
        }
        guard keyID == kek.keyID else { throw CRMKeyError.wrongKey(expected: keyID, actual: kek.keyID) }
        var material: [UInt8]
        do {
            material = try kek.unwrap(wrapped, context: context(version))
        } catch let error as MasterKeyError {
            if case .wrongMasterKey(let expected, let actual) = error {
                throw CRMKeyError.wrongKey(expected: expected, actual: actual)
            }
            throw CRMKeyError.keySetDamaged(version: version, reason: "\(error)")
        } catch {
            throw CRMKeyError.keyUnavailable("\(error)")
        }
        defer { scrub(&material) }
        guard material.count == Purpose.allCases.count * SymmetricKey.byteCount else {
            throw CRMKeyError.keySetDamaged(version: version, reason: "it holds \(material.count) bytes of keys")
        }
        let keys = stride(from: 0, to: material.count, by: SymmetricKey.byteCount).map {
            SymmetricKey(copying: Array(material[$0..<($0 + SymmetricKey.byteCount)]))
        }
        let set = CRMKeySet(version: version, keys: keys)
        guard set.checkValue == check else {
            throw CRMKeyError.keySetDamaged(version: version, reason: "its check value does not match")
        }
        return set
    }
}
