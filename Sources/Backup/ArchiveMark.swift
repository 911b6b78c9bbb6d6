import BinaryCoding
import KVStore

/// How far the log is archived, in the replicated state (`c/sys/archive`): the last index the
/// leader's archiver wrote into a segment in every target, and the lineage of the log (empty for
/// a cluster as bootstrapped, 16 random bytes from each restore on). Every member reads it
/// when it compacts its log (entries after it are retained for the next leader's archiver),
/// and a restore keeps only the segments of its backup's lineage: another history that reuses
/// the same indexes (the cluster the backup was restored from) is never replayed into it.
public struct ArchiveMark: Equatable, Sendable {
    /// Relative to the CRM prefix (proposed in a transaction).
    public static let key = Array("sys/archive".utf8)

    public var archivedThrough: UInt64
    public var lineage: [UInt8]

    public init(archivedThrough: UInt64, lineage: [UInt8]) {
        precondition(lineage.isEmpty || lineage.count == 16, "a lineage is empty or 16 bytes")
        self.archivedThrough = archivedThrough
        self.lineage = lineage
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let through = reader.u64(), let lineage = reader.blob(limit: 16), lineage.isEmpty || lineage.count == 16,
            reader.isAtEnd
        else { return nil }
        self.init(archivedThrough: through, lineage: lineage)
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 28)
        writer.u64(archivedThrough)
        writer.blob(lineage)
        return writer.bytes
    }

    /// The mark in `kv`'s applied state (none: nothing archived, the original lineage).
    public static func read(_ kv: ReplicatedKV) throws -> ArchiveMark {
        guard let value = try kv.crmValue(key) else { return ArchiveMark(archivedThrough: 0, lineage: []) }
        guard let mark = ArchiveMark(encoded: value.payload) else {
            throw BackupProblem("the archive mark in the replicated state does not decode")
        }
        return mark
    }

    /// The lineage as shown in a segment's manifest ("" for the original).
    public var lineageText: String { lineage.map { String(format: "%02x", $0) }.joined() }
}
