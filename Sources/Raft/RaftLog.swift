/// The log as the core sees it: persisted entries in the `LogStore`, followed by entries (and
/// possibly a snapshot) not yet persisted, plus the commit and apply positions.
struct RaftLog {
    let store: any LogStore
    /// Entries not yet persisted; the first has index `unstableOffset`.
    private(set) var unstable: [Entry] = []
    private(set) var unstableOffset: UInt64
    /// A snapshot received from the leader and not yet persisted.
    private(set) var pendingSnapshot: Snapshot?
    private(set) var committed: UInt64
    /// Highest index handed out for applying.
    private(set) var applied: UInt64

    init(store: any LogStore, committed: UInt64) {
        self.store = store
        unstableOffset = store.lastIndex + 1
        let snapshotIndex = store.snapshotMetadata.index
        precondition(committed <= store.lastIndex, "hard state commit \(committed) beyond the log \(store.lastIndex)")
        self.committed = max(committed, snapshotIndex)
        applied = snapshotIndex
    }

    var firstIndex: UInt64 {
        if let pendingSnapshot { return pendingSnapshot.metadata.index + 1 }
        return store.firstIndex
    }

    var lastIndex: UInt64 {
        if let last = unstable.last { return last.index }
        if let pendingSnapshot { return pendingSnapshot.metadata.index }
        return store.lastIndex
    }

    var lastTerm: UInt64 { term(at: lastIndex)! }

    /// Term of the entry at `index`, or nil if compacted away or beyond the end.
    func term(at index: UInt64) -> UInt64? {
        if index >= unstableOffset {
            let position = index - unstableOffset
            return position < UInt64(unstable.count) ? unstable[Int(position)].term : nil
        }
        if let pendingSnapshot {
            if index == pendingSnapshot.metadata.index { return pendingSnapshot.metadata.term }
            if index < pendingSnapshot.metadata.index { return nil }
        }
        return store.term(at: index)
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) -> Bool { self.term(at: index) == term }

    /// Raft's "at least as up to date" rule for granting votes (§5.4.1).
    func isUpToDate(lastIndex candidateIndex: UInt64, lastTerm candidateTerm: UInt64) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    /// Entries in `from..<to`, at most `maxBytes` (at least one if the range is not empty).
    func entries(from: UInt64, to: UInt64? = nil, maxBytes: Int) -> [Entry] {
        let end = min(to ?? lastIndex + 1, lastIndex + 1)
        guard from < end else { return [] }
        precondition(from >= firstIndex, "entries from \(from) are compacted (first \(firstIndex))")
        var result: [Entry] = []
        if from < unstableOffset {
            result = store.entries(from: from, to: min(end, unstableOffset), maxBytes: maxBytes)
            if result.count < Int(min(end, unstableOffset) - from) { return result }
        }
        var bytes = result.reduce(0) { $0 + $1.sizeBytes }
        var index = max(from, unstableOffset)
        while index < end {
            let entry = unstable[Int(index - unstableOffset)]
            if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
            bytes += entry.sizeBytes
            result.append(entry)
            index += 1
        }
        return result
    }

    // MARK: - Appending

    /// Appends entries that follow the last one (the leader's own proposals).
    mutating func append(_ entries: [Entry]) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        guard let first = entries.first else { return }
        precondition(first.index == lastIndex + 1, "appended entry \(first.index) does not follow \(lastIndex)")
        precondition(first.index > committed, "appending over committed entries")
        truncateAndAppend(entries)
    }

    /// A follower's append: if the log has (`index`, `term`), writes `entries` after it
    /// (dropping any conflicting suffix), advances commit to min(`leaderCommit`, last new
    /// index) and returns that last new index; nil if the log does not match.
    mutating func maybeAppend(index: UInt64, term: UInt64, leaderCommit: UInt64, entries: [Entry]) -> UInt64? {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        guard matchTerm(index, term) else { return nil }
        let lastNew = index + UInt64(entries.count)
        if let conflict = firstConflict(entries) {
            precondition(
                conflict > committed, "entry \(conflict) conflicts with a committed entry (commit \(committed))")
            truncateAndAppend(Array(entries[Int(conflict - index - 1)...]))
        }
        commit(to: min(leaderCommit, lastNew))
        return lastNew
    }

    /// Index of the first entry that is new or differs from the log, or nil if all match.
    private func firstConflict(_ entries: [Entry]) -> UInt64? {
        for entry in entries where !matchTerm(entry.index, entry.term) { return entry.index }
        return nil
    }

    private mutating func truncateAndAppend(_ entries: [Entry]) {
        let first = entries[0].index
        if first == unstableOffset + UInt64(unstable.count) {
            unstable.append(contentsOf: entries)
        } else if first <= unstableOffset {
            // Replaces part of the persisted log: the node overwrites it when it persists these.
            unstableOffset = first
            unstable = entries
        } else {
            unstable.removeLast(Int(unstableOffset + UInt64(unstable.count) - first))
            unstable.append(contentsOf: entries)
        }
        assert(unstable.isEmpty || unstable.last!.index == unstableOffset + UInt64(unstable.count) - 1)
    }

    // MARK: - Commit and apply

    mutating func commit(to index: UInt64) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit \(index) beyond the last index \(lastIndex)")
        committed = index
    }

    /// Leader rule: commit `index` only if its entry is of the current `term` (§5.4.2).
    mutating func maybeCommit(_ index: UInt64, term: UInt64) -> Bool {
        guard index > committed, self.term(at: index) == term else { return false }
        commit(to: index)
        return true
    }

    /// Committed entries not yet handed out for applying, at most `maxBytes`.
    func nextCommittedEntries(maxBytes: Int) -> [Entry] {
        guard committed > applied else { return [] }
        return entries(from: max(applied + 1, firstIndex), to: committed + 1, maxBytes: maxBytes)
    }

    var hasNextCommittedEntries: Bool { committed > applied }

    mutating func appliedTo(_ index: UInt64) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        precondition(index <= committed && index >= applied, "applied \(index) outside \(applied)...\(committed)")
        applied = index
    }

    // MARK: - Persistence acknowledgements

    /// Entries up to (`index`, `term`) are now persisted.
    mutating func stableTo(index: UInt64, term: UInt64) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        guard index >= unstableOffset, matchTerm(index, term) else { return }
        let count = Int(index - unstableOffset + 1)
        guard count <= unstable.count else { return }
        unstable.removeFirst(count)
        unstableOffset = index + 1
    }

    /// The snapshot at `index` is persisted (a newer one may have arrived meanwhile: it stays).
    mutating func snapshotStable(index: UInt64) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        guard pendingSnapshot?.metadata.index == index else { return }
        pendingSnapshot = nil
    }

    /// Replaces the log with `snapshot` (from the leader); the node persists and applies it.
    mutating func restore(_ snapshot: Snapshot) {
        defer {
            assert(
                checkInvariants(),
                "raft log invariant broken: applied \(applied), committed \(committed), last \(lastIndex), unstable from \(unstableOffset) (\(unstable.count))"
            )
        }
        let index = snapshot.metadata.index
        precondition(index > committed, "restoring a snapshot at or below the commit index")
        pendingSnapshot = snapshot
        unstable = []
        unstableOffset = index + 1
        committed = index
        applied = index
    }

    /// What the next Ready must persist.
    var unstableEntries: [Entry] { unstable }

    /// The log's invariants, checked after every change in debug builds (and so by every test,
    /// simulated seed and drill): applied ≤ committed ≤ last index; the unstable entries run
    /// from `unstableOffset` without a gap, right after what is persisted (or a pending snapshot).
    func checkInvariants() -> Bool {
        guard applied <= committed, committed <= lastIndex else { return false }
        if let first = unstable.first {
            guard first.index == unstableOffset, unstable.last!.index == unstableOffset + UInt64(unstable.count) - 1
            else { return false }
        }
        let base = pendingSnapshot?.metadata.index ?? store.lastIndex
        if pendingSnapshot != nil {
            guard unstableOffset == base + 1 else { return false }
        } else {
            guard unstableOffset >= store.firstIndex, unstableOffset <= base + 1 else { return false }
        }
        return true
    }
}
