import Raft

/// The most recent entries of the log in memory, so that replication to followers that keep up
/// (the common case) reads no disk. Bounded by bytes; always a contiguous run that ends at the
/// log's last index.
struct EntryCache {
    let capacityBytes: Int
    private var entries: [Entry] = []
    /// Position in `entries` of the oldest cached entry (earlier slots are dead).
    private var start = 0
    private(set) var bytes = 0

    init(capacityBytes: Int) {
        precondition(capacityBytes >= 0)
        self.capacityBytes = capacityBytes
    }

    var firstIndex: UInt64? { start < entries.count ? entries[start].index : nil }
    var isEmpty: Bool { start == entries.count }

    /// Adds entries that follow the log's persisted prefix at `entries[0].index`, replacing any
    /// cached entries from there on.
    mutating func store(_ new: [Entry]) {
        guard let first = new.first, capacityBytes > 0 else { return }
        if let cachedFirst = firstIndex, first.index >= cachedFirst, first.index <= entries.last!.index + 1 {
            drop(from: first.index)
        } else {
            clear()
        }
        for entry in new {
            entries.append(entry)
            bytes += entry.sizeBytes
        }
        evict()
    }

    /// Forgets cached entries at `index` and after.
    mutating func drop(from index: UInt64) {
        guard let cachedFirst = firstIndex else { return }
        guard index > cachedFirst else { return clear() }
        let keep = start + Int(index - cachedFirst)
        guard keep < entries.count else { return }
        for entry in entries[keep...] { bytes -= entry.sizeBytes }
        entries.removeLast(entries.count - keep)
    }

    /// Forgets cached entries up to and including `index` (compacted away).
    mutating func drop(through index: UInt64) {
        while let cachedFirst = firstIndex, cachedFirst <= index {
            bytes -= entries[start].sizeBytes
            start += 1
        }
        reclaim()
    }

    mutating func clear() {
        entries.removeAll(keepingCapacity: true)
        start = 0
        bytes = 0
    }

    /// Cached entries in `from..<to`, stopping after `maxBytes` (at least one); nil unless the
    /// cache holds `from`.
    func entries(from: UInt64, to: UInt64, maxBytes: Int) -> [Entry]? {
        guard let cachedFirst = firstIndex, from >= cachedFirst, from < to, to <= entries.last!.index + 1 else {
            return nil
        }
        var result: [Entry] = []
        var total = 0
        var position = start + Int(from - cachedFirst)
        let end = start + Int(to - cachedFirst)
        while position < end {
            let entry = entries[position]
            if !result.isEmpty && total + entry.sizeBytes > maxBytes { break }
            total += entry.sizeBytes
            result.append(entry)
            position += 1
        }
        return result
    }

    private mutating func evict() {
        while bytes > capacityBytes, !isEmpty {
            bytes -= entries[start].sizeBytes
            start += 1
        }
        reclaim()
    }

    /// Releases dead slots once they are at least half of the array.
    private mutating func reclaim() {
        if start == entries.count {
            clear()
        } else if start > 1024 && start * 2 > entries.count {
            entries.removeFirst(start)
            start = 0
        }
    }
}
