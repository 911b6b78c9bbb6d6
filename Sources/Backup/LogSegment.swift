import AuditChain
import BinaryCoding
import Foundation
import Raft
import Sealing

/// What a log segment holds: committed entries `firstIndex...lastIndex` of one member's log,
/// in the `log` chunks (subject keys cut out, `LogRedaction`), and the cut-out values in the
/// `log-keys` chunks. Written last as `manifest.json`, sealed like a backup's manifest (a MAC
/// under a key derived from the segment's data key, and the member's signature).
public struct LogSegmentManifest: Codable, Equatable, Sendable {
    public static let currentFormat = 1

    public var format: Int
    /// 32 hexadecimal characters; the end of the segment's directory name.
    public var segmentID: String
    public var member: UInt64
    /// The log's lineage (`ArchiveMark`), hexadecimal ("" for a cluster as bootstrapped).
    public var lineage: String
    public var firstIndex: UInt64
    public var lastIndex: UInt64
    /// The term of the entry before the first: with `lastTerm`, what links segments into a chain
    /// and the first one to a full backup (its applied index and term).
    public var previousTerm: UInt64
    public var lastTerm: UInt64
    /// The greatest proposal time among its commands (0: none).
    public var lastLogTimeMillis: UInt64
    public var createdAtMillis: UInt64
    public var binaryVersion: String
    /// Values cut out of the entries, kept in the `log-keys` chunks.
    public var redactedValues: UInt64
    public var log: [BackupManifest.Chunk]
    public var logKeys: [BackupManifest.Chunk]
    public var wrappedKey: String
    public var keyProvider: String

    enum CodingKeys: String, CodingKey {
        case format
        case segmentID = "segment_id"
        case member, lineage
        case firstIndex = "first_index"
        case lastIndex = "last_index"
        case previousTerm = "previous_term"
        case lastTerm = "last_term"
        case lastLogTimeMillis = "last_log_time_ms"
        case createdAtMillis = "created_at_ms"
        case binaryVersion = "binary_version"
        case redactedValues = "redacted_values"
        case log
        case logKeys = "log_keys"
        case wrappedKey = "wrapped_key"
        case keyProvider = "key_provider"
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return Array(try encoder.encode(self))
    }
}

/// Segments in a target: `<target>/segments/<first>-<last>-<id>/` (indexes in 20 digits, so
/// names sort by index), `.partial-<id>` while one is written.
public enum LogSegments {
    public static let directoryName = "segments"
    /// A segment is closed at this many bytes of entries (or when the archiver's interval ends).
    public static let maxSegmentBytes = 64 << 20

    public struct Listed: Equatable, Sendable {
        public var firstIndex: UInt64
        public var lastIndex: UInt64
        public var id: BackupID
        public var path: String
    }

    public static func directory(_ target: String) -> String { target + "/" + directoryName }

    static func name(first: UInt64, last: UInt64, id: BackupID) -> String {
        String(format: "%020llu-%020llu-", first, last) + id.description
    }

    /// The complete segments of a target, by first index.
    public static func list(_ target: String) -> [Listed] {
        let root = directory(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.compactMap { name -> Listed? in
            let parts = name.split(separator: "-")
            guard parts.count == 3, parts[0].count == 20, parts[1].count == 20, let first = UInt64(parts[0]),
                let last = UInt64(parts[1]), first <= last, let id = BackupID(String(parts[2]))
            else { return nil }
            return Listed(firstIndex: first, lastIndex: last, id: id, path: root + "/" + name)
        }.sorted { ($0.firstIndex, $0.lastIndex, $0.id.description) < ($1.firstIndex, $1.lastIndex, $1.id.description) }
    }

    /// Removes the segments of a target that end before `index` (the oldest full backup kept:
    /// nothing can be replayed onto an earlier one), and partial ones older than a day; answers
    /// how many segments.
    public static func prune(_ target: String, before index: UInt64, now: UInt64) -> Int {
        var removed = 0
        for listed in list(target) where listed.lastIndex < index {
            if (try? FileManager.default.removeItem(atPath: listed.path)) != nil { removed += 1 }
        }
        let root = directory(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        for name in names where name.hasPrefix(BackupStore.partialPrefix) {
            let path = root + "/" + name
            if let made = modifiedMillis(path), now > made, now - made > 86_400_000 {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        return removed
    }

    private static func modifiedMillis(_ path: String) -> UInt64? {
        guard let date = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date else {
            return nil
        }
        return UInt64(max(0, date.timeIntervalSince1970 * 1000))
    }
}

/// Writes one segment of committed entries into a target: chunks, then the manifest and its
/// seal, in a partial directory renamed into place when all is durable.
public struct LogSegmentWriter: Sendable {
    public let kek: any MasterKeyProvider
    public let signer: BackupSigner

    public init(kek: any MasterKeyProvider, signer: BackupSigner) {
        self.kek = kek
        self.signer = signer
    }

    /// Writes `entries` (contiguous, committed) of the log of `lineage`, following an entry of
    /// `previousTerm`.
    public func write(
        _ entries: [Entry], previousTerm: UInt64, lineage: String, origin: BackupWriter.Origin, into target: String
    ) throws -> LogSegmentManifest {
        precondition(!entries.isEmpty, "an empty log segment")
        for (offset, entry) in entries.enumerated() {
            precondition(entry.index == entries[0].index + UInt64(offset), "log segment entries are not contiguous")
        }
        let id = try BackupID.random()
        let root = LogSegments.directory(target)
        try FileManager.default.createDirectory(
            atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let partial = root + "/" + BackupStore.partialPrefix + id.description
        try FileManager.default.createDirectory(
            atPath: partial, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        do {
            let manifest = try writeContents(
                entries, previousTerm: previousTerm, lineage: lineage, id: id, origin: origin, partial)
            try BackupFiles.syncDirectory(partial)
            let name = LogSegments.name(first: manifest.firstIndex, last: manifest.lastIndex, id: id)
            try FileManager.default.moveItem(atPath: partial, toPath: root + "/" + name)
            try BackupFiles.syncDirectory(root)
            return manifest
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
    }

    private func writeContents(
        _ entries: [Entry], previousTerm: UInt64, lineage: String, id: BackupID, origin: BackupWriter.Origin,
        _ directory: String
    ) throws -> LogSegmentManifest {
        let dataKey = try SymmetricKey.generate()
        let cipher = AES256GCM(key: dataKey)
        let log = ChunkSink(directory: directory, stream: .log, id: id, cipher: cipher)
        let keys = ChunkSink(directory: directory, stream: .logKeys, id: id, cipher: cipher)
        var redacted: UInt64 = 0
        var lastTime: UInt64 = 0
        for entry in entries {
            let (data, removed) = LogRedaction.redact(entry)
            try log.add(SegmentRecords.entryKey(entry), data)
            for item in removed {
                try keys.add(SegmentRecords.removedKey(index: entry.index, operation: item.operation), item.value)
            }
            redacted += UInt64(removed.count)
            lastTime = max(lastTime, LogRedaction.proposedAtMillis(entry))
        }
        let wrapped = try dataKey.withUnsafeBytes { try kek.wrap($0, context: Self.wrapContext(id)) }
        let manifest = LogSegmentManifest(
            format: LogSegmentManifest.currentFormat, segmentID: id.description, member: origin.member,
            lineage: lineage, firstIndex: entries[0].index, lastIndex: entries[entries.count - 1].index,
            previousTerm: previousTerm,
            lastTerm: entries[entries.count - 1].term, lastLogTimeMillis: lastTime,
            createdAtMillis: origin.createdAtMillis, binaryVersion: origin.binaryVersion, redactedValues: redacted,
            log: try log.finish(), logKeys: try keys.finish(), wrappedKey: AuditChain.hex(wrapped),
            keyProvider: kek.keyID)
        try BackupSeal.write(try manifest.encoded(), dataKey: dataKey, signer: signer, into: directory)
        return manifest
    }

    /// A segment's data key is wrapped for its id alone.
    static func wrapContext(_ id: BackupID) -> [UInt8] { Array("crm.backup.v1 segment key ".utf8) + id.bytes }
}

/// The record keys of a segment's streams: an entry is `index ‖ term ‖ kind`; a cut-out value
/// `index ‖ operation`.
enum SegmentRecords {
    static func entryKey(_ entry: Entry) -> [UInt8] {
        var writer = BinaryWriter(capacity: 17)
        writer.u64(entry.index)
        writer.u64(entry.term)
        writer.u8(entry.kind.rawValue)
        return writer.bytes
    }

    static func entry(key: [UInt8], data: [UInt8]) -> Entry? {
        var reader = BinaryReader(key)
        guard let index = reader.u64(), let term = reader.u64(), let code = reader.u8(),
            let kind = Entry.Kind(rawValue: code), reader.isAtEnd
        else { return nil }
        return Entry(term: term, index: index, kind: kind, data: data)
    }

    static func removedKey(index: UInt64, operation: UInt16) -> [UInt8] {
        var writer = BinaryWriter(capacity: 10)
        writer.u64(index)
        writer.u16(operation)
        return writer.bytes
    }

    static func removed(key: [UInt8]) -> (index: UInt64, operation: UInt16)? {
        var reader = BinaryReader(key)
        guard let index = reader.u64(), let operation = reader.u16(), reader.isAtEnd else { return nil }
        return (index, operation)
    }
}
