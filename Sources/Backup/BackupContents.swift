import AuditChain
import BinaryCoding
import CRM
import KVStore
import Sealing

/// The two archives of a backup. The data archive holds what the CRM and the KV API stored
/// (records, configuration, history, audit entries, the key-set record); the key archive holds
/// the wrapped subject keys and the key-set record. Personal fields in the data archive are
/// sealed under subject keys, so the data archive alone (with the backup key) reveals none: it
/// takes the key archive and the CRM key-encryption key as well.
public enum BackupArtefact: String, Codable, CaseIterable, Sendable {
    case data
    case keys

    /// Bound into each chunk's authenticated data.
    var code: UInt8 {
        switch self {
        case .data: 1
        case .keys: 2
        }
    }
}

/// Which archive each state key goes to. Sign-in sessions go to neither: a restored cluster
/// starts with everybody signed out. Member addresses and KV sessions are not read at all
/// (`BackedUpState.prefixes`).
enum BackupContents {
    static let crm = BackedUpState.crm
    static let keySet = crm + CRMKeys.keySetInUse
    static let auditHead = crm + AuditChain.headKey(AuditChain.crmChain)
    static let auditBase = crm + AuditChain.crmChain + Array("-base".utf8)
    static let auditEntries = crm + AuditChain.entryPrefix(AuditChain.crmChain)

    private static let dataOnly: [BackupArtefact] = [.data]
    private static let keysOnly: [BackupArtefact] = [.keys]
    private static let both: [BackupArtefact] = [.data, .keys]
    private static let vault = Array("/v/".utf8)
    private static let signInSessions = [Array("/ss/".utf8), Array("/su/".utf8)]

    /// The archives `key` (absolute) belongs to (shared arrays: this runs for every record).
    static func artefacts(of key: [UInt8]) -> [BackupArtefact] {
        guard key.starts(with: crm) else { return dataOnly }
        // The key set's records (`c/sys/keyset`, `c/sys/keyset/<version>`): both archives.
        if key.starts(with: keySet) { return both }
        let workspaceEnd = crm.count + 4
        guard key.count > workspaceEnd else { return dataOnly }
        let rest = key[workspaceEnd...]
        if rest.starts(with: vault) { return keysOnly }
        if signInSessions.contains(where: { rest.starts(with: $0) }) { return [] }
        return dataOnly
    }

    /// The entity of a record key (`c/<workspace>/r/<entity>/<id>`), or nil for any other key.
    static func recordEntity(of key: [UInt8]) -> EntityCode? {
        let workspaceEnd = crm.count + 4
        let marker = Array("/r/".utf8)
        guard key.starts(with: crm), key.count == workspaceEnd + marker.count + 3 + CRMID.byteCount,
            key[workspaceEnd...].starts(with: marker)
        else { return nil }
        let code = key[(workspaceEnd + marker.count)..<(workspaceEnd + marker.count + 2)]
        guard key[workspaceEnd + marker.count + 2] == UInt8(ascii: "/") else { return nil }
        return EntityCode(rawValue: String(decoding: code, as: UTF8.self))
    }
}

/// What the data archive holds, counted as it is written and again by a deep verify: records
/// per entity, KV values, audit entries, subject keys (key archive), and the digest of every
/// data record in order.
struct BackupTally {
    var counts: [String: UInt64] = [:]
    var auditHead: AuditHead = .empty
    var auditBase: AuditHead = .empty
    var keySetVersion: UInt64 = 0
    private let digest = SHA256Hasher()

    static let kvValues = "kv_values"
    static let auditEntries = "audit_entries"
    static let subjectKeys = "subject_keys"

    mutating func add(_ key: [UInt8], _ value: [UInt8], to artefact: BackupArtefact) {
        switch artefact {
        case .keys:
            if !key.starts(with: BackupContents.keySet) { counts[Self.subjectKeys, default: 0] += 1 }
        case .data:
            var record = BinaryWriter(capacity: key.count + value.count + 8)
            record.blob(key)
            record.blob(value)
            digest.update(record.bytes)
            if let entity = BackupContents.recordEntity(of: key) {
                counts[entity.name, default: 0] += 1
            } else if !key.starts(with: BackupContents.crm) {
                counts[Self.kvValues, default: 0] += 1
            } else if key.starts(with: BackupContents.auditEntries) {
                counts[Self.auditEntries, default: 0] += 1
            } else if key == BackupContents.auditHead {
                auditHead = CRMValue(stored: value).flatMap { AuditHead(encoded: $0.payload) } ?? .empty
            } else if key == BackupContents.auditBase {
                auditBase = CRMValue(stored: value).flatMap { AuditHead(encoded: $0.payload) } ?? .empty
            } else if key == BackupContents.keySet, let stored = CRMValue(stored: value) {
                var reader = BinaryReader(stored.payload)
                keySetVersion = reader.u64() ?? 0
            }
        }
    }

    /// The digest of every data record added (hex); called once, at the end.
    func contentDigest() -> String { AuditChain.hex(digest.finish()) }
}

/// What a backup of a state would hold, counted from the state itself: a restore reads its new
/// store back through it and compares with the manifest it restored.
public enum BackupDigest {
    public static func of(_ state: PinnedState) throws -> (counts: [String: UInt64], contentDigest: String) {
        var tally = BackupTally()
        try state.forEachRecord(under: BackedUpState.prefixes) { key, value in
            for artefact in BackupContents.artefacts(of: key) { tally.add(key, value, to: artefact) }
        }
        return (tally.counts, tally.contentDigest())
    }
}
