/// The persisted part of the log, as the consensus core reads it.
///
/// The node implements it over the storage engine, the simulator in memory. Entries from
/// `firstIndex` to `lastIndex` are present; everything up to `snapshot.index` is compacted
/// into the snapshot. The core only reads; the node writes what a `Ready` tells it to, then
/// calls `advance`. An implementation that cannot read its own persisted log must stop the
/// process: the core cannot make progress on a log it cannot read.
public protocol LogStore: AnyObject {
    var snapshotMetadata: SnapshotMetadata { get }
    /// `snapshotMetadata.index + 1`.
    var firstIndex: UInt64 { get }
    /// The last persisted index (`snapshotMetadata.index` when no entries follow it).
    var lastIndex: UInt64 { get }
    /// Term of the entry at `index` for `snapshotMetadata.index <= index <= lastIndex`, else nil.
    func term(at index: UInt64) -> UInt64?
    /// Entries in `from..<to` (within `firstIndex...lastIndex+1`), stopping after `maxBytes`
    /// (at least one entry is returned when the range is not empty).
    func entries(from: UInt64, to: UInt64, maxBytes: Int) -> [Entry]
    /// The latest snapshot, to send to a follower that is too far behind.
    func snapshot() -> Snapshot
}

/// A `LogStore` in memory, used by the simulator and the tests. It also plays the node's part:
/// `persist` applies what a `Ready` asks to be written.
public final class MemoryLogStore: LogStore {
    public private(set) var hardState = HardState()
    public private(set) var storedSnapshot: Snapshot
    /// Entries after the snapshot, consecutive.
    public private(set) var stored: [Entry] = []

    public init(configuration: Configuration) {
        storedSnapshot = Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, configuration: configuration), data: [])
    }

    public var snapshotMetadata: SnapshotMetadata { storedSnapshot.metadata }
    public var firstIndex: UInt64 { storedSnapshot.metadata.index + 1 }
    public var lastIndex: UInt64 { storedSnapshot.metadata.index + UInt64(stored.count) }

    public func term(at index: UInt64) -> UInt64? {
        if index == storedSnapshot.metadata.index { return storedSnapshot.metadata.term }
        guard index > storedSnapshot.metadata.index, index <= lastIndex else { return nil }
        return stored[Int(index - firstIndex)].term
    }

    public func entries(from: UInt64, to: UInt64, maxBytes: Int) -> [Entry] {
        precondition(
            from >= firstIndex && to <= lastIndex + 1 && from <= to,
            "entries \(from)..<\(to) outside \(firstIndex)...\(lastIndex)")
        var result: [Entry] = []
        var bytes = 0
        for index in from..<to {
            let entry = stored[Int(index - firstIndex)]
            if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
            bytes += entry.sizeBytes
            result.append(entry)
        }
        return result
    }

    public func snapshot() -> Snapshot { storedSnapshot }

    /// Writes entries, replacing any stored entries at the same or later indexes.
    public func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index >= firstIndex && first.index <= lastIndex + 1, "gap before appended entries")
        stored.removeLast(Int(lastIndex + 1 - first.index))
        stored.append(contentsOf: entries)
        assert(stored.last?.index == lastIndex)
    }

    public func setHardState(_ state: HardState) { hardState = state }

    /// Replaces the log with `snapshot`, keeping entries after it if they agree with it.
    public func applySnapshot(_ snapshot: Snapshot) {
        let index = snapshot.metadata.index
        if term(at: index) == snapshot.metadata.term, index <= lastIndex {
            stored.removeFirst(Int(index - storedSnapshot.metadata.index))
        } else {
            stored.removeAll()
        }
        storedSnapshot = snapshot
    }

    /// Discards entries up to `index` (already applied and covered by `snapshot`).
    public func compact(to snapshot: Snapshot) {
        let index = snapshot.metadata.index
        precondition(index >= storedSnapshot.metadata.index && index <= lastIndex, "compaction beyond the log")
        precondition(term(at: index) == snapshot.metadata.term, "snapshot term disagrees with the log")
        stored.removeFirst(Int(index - storedSnapshot.metadata.index))
        storedSnapshot = snapshot
    }

    /// Drops every entry after `index` that was not synced (simulated crash; see the simulator).
    public func truncate(after index: UInt64) {
        guard index < lastIndex else { return }
        stored.removeLast(Int(lastIndex - max(index, storedSnapshot.metadata.index)))
    }
}
