import BinaryCoding
import KVStore
import Sealing

/// Where CRM state lives, relative to the CRM prefix (`c/`). Keys hold only random ids,
/// versions and keyed lookup tokens: never personal data.
public enum CRMLayout {
    /// The one workspace of this version (every workspace key carries its number, so that more
    /// can come without moving data).
    public static let defaultWorkspace: UInt32 = 1

    /// Key set `version`'s wrapped record.
    public static func keySet(_ version: UInt64) -> [UInt8] { keySetPrefix + bigEndian(version) }
    static let keySetPrefix = Array("sys/keyset/".utf8)
    /// The re-wrap job after a key-set rotation: from and to versions and its cursor.
    public static let rewrapJob = Array("sys/rewrap".utf8)

    /// A subject's wrapped key.
    public static func subjectKey(workspace: UInt32, subject: CRMID) -> [UInt8] {
        vaultPrefix(workspace: workspace) + subject.bytes
    }

    public static func vaultPrefix(workspace: UInt32) -> [UInt8] {
        bigEndian(workspace) + Array("/v/sk/".utf8)
    }

    /// `<workspace><suffix>`: where the directory keeps credentials, sessions and markers.
    public static func workspaceKey(_ workspace: UInt32, _ suffix: String) -> [UInt8] {
        bigEndian(workspace) + Array(suffix.utf8)
    }

    /// The custom fields of `entity` (configuration: names, types, purposes; never values).
    public static func metadata(workspace: UInt32, entity: EntityCode) -> [UInt8] {
        bigEndian(workspace) + Array("/meta/\(entity.rawValue)".utf8)
    }

    /// Team `id` (configuration: its name and whether it is retired).
    public static func team(workspace: UInt32, id: CRMID) -> [UInt8] { workspaceKey(workspace, "/team/") + id.bytes }

    /// A record of `entity` with `id`.
    public static func record(workspace: UInt32, entity: EntityCode, id: CRMID) -> [UInt8] {
        recordPrefix(workspace: workspace, entity: entity) + id.bytes
    }

    public static func recordPrefix(workspace: UInt32, entity: EntityCode) -> [UInt8] {
        bigEndian(workspace) + Array("/r/\(entity.rawValue)/".utf8)
    }

    /// Index `code`'s entries for `value`: each is `<prefix><entity><id>`, with an empty value.
    public static func indexPrefix(workspace: UInt32, _ code: String, value: [UInt8]) -> [UInt8] {
        bigEndian(workspace) + Array("/x/\(code)/".utf8) + value
    }

    static func indexEntry(workspace: UInt32, _ code: String, value: [UInt8], entity: EntityCode, id: CRMID) -> [UInt8]
    {
        indexPrefix(workspace: workspace, code, value: value) + recordSuffix(entity, id)
    }

    /// The guard entry of a unique lookup (`<prefix>uq/<code>/<token>`, no record id): written
    /// with an `absent` condition, so that a second record with the same value fails whole.
    public static func uniqueGuard(workspace: UInt32, _ code: String, value: [UInt8]) -> [UInt8] {
        uniqueGuardPrefix(workspace: workspace) + Array("\(code)/".utf8) + value
    }

    static func uniqueGuardPrefix(workspace: UInt32) -> [UInt8] { bigEndian(workspace) + Array("/x/uq/".utf8) }

    /// Records by update time: `<prefix><log time, 8 bytes><entity><id>`.
    public static func updatedPrefix(workspace: UInt32) -> [UInt8] { bigEndian(workspace) + Array("/x/up/".utf8) }

    static func recordSuffix(_ entity: EntityCode, _ id: CRMID) -> [UInt8] { Array(entity.rawValue.utf8) + id.bytes }

    /// The subject whose key seals personal fields that belong to no person.
    public static let workspaceSubject = CRMID(bytes: [UInt8](repeating: 0, count: CRMID.byteCount))!

    static func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }
    static func bigEndian(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
    }

    /// The smallest key after every key that starts with `prefix`: trailing 0xFF bytes (an id
    /// may end in them) are dropped and the last byte left is raised.
    public static func end(of prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while end.last == 0xFF { end.removeLast() }
        precondition(!end.isEmpty, "a CRM prefix holds a byte below 0xFF")
        end[end.count - 1] += 1
        return end
    }
}

/// Tokens for equality lookups of personal values: the first 16 bytes of HMAC-SHA-256 under the
/// key set's lookup key, of the purpose and the normalised value (length-prefixed, so that no
/// two pairs run together). Equal values give equal tokens; a token reveals nothing without
/// the key.
public enum LookupTokens {
    public static let byteCount = 16

    public static func token(purpose: String, normalised value: [UInt8], keySet: CRMKeySet) -> [UInt8] {
        var writer = BinaryWriter(capacity: value.count + purpose.utf8.count + 8)
        writer.blob(Array(purpose.utf8))
        writer.blob(value)
        return Array(HMACSHA256.authenticate(writer.bytes, key: keySet.key(.lookup)).prefix(byteCount))
    }
}
