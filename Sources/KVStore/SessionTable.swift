import HeapModule

/// Client sessions of the replicated KV state machine: each session's last write number and
/// its outcome, so that a retried write is answered instead of applied again.
///
/// Bounded: at most `capacity` sessions; opening one more closes the least recently active.
/// Sessions idle for longer than `idleTimeoutMillis` of log time expire. Both rules depend on
/// the log alone (activity is counted in log indexes, time is the largest proposer clock the
/// log has carried), so every member keeps exactly the same table.
struct SessionTable {
    struct Session: Equatable {
        /// The identity that opened it ("" for sessions opened by version-1 entries).
        var owner: String = ""
        var lastSequence: UInt64
        var lastOutcome: KVOutcome?
        /// Log index of the session's last command (its recency).
        var activeAtIndex: UInt64
        /// Log time of the session's last command.
        var activeAtMillis: UInt64
    }

    let capacity: Int
    let idleTimeoutMillis: UInt64
    /// Sessions one owner may hold; opening one more closes that owner's least recently active.
    let capacityPerOwner: Int
    private(set) var sessions: [UInt64: Session] = [:]
    /// Session ids by owner, for the per-owner bound.
    private var byOwner: [String: Set<UInt64>] = [:]
    /// (activeAtIndex, session) for every touch; entries whose index is no longer the
    /// session's are stale and skipped. Rebuilt when it grows past twice the table.
    private var recency = Heap<Recency>()

    private struct Recency: Comparable {
        var index: UInt64
        var id: UInt64
        static func < (a: Recency, b: Recency) -> Bool { (a.index, a.id) < (b.index, b.id) }
    }

    init(capacity: Int, idleTimeoutMillis: UInt64, capacityPerOwner: Int? = nil) {
        precondition(capacity > 0 && idleTimeoutMillis > 0)
        self.capacity = capacity
        self.idleTimeoutMillis = idleTimeoutMillis
        self.capacityPerOwner = max(1, min(capacityPerOwner ?? capacity, capacity))
    }

    /// How many sessions `owner` holds.
    func count(of owner: String) -> Int { byOwner[owner]?.count ?? 0 }

    /// The sessions `owner` must give up before it opens one more: its least recently active
    /// beyond the per-owner bound (the same choice on every member).
    func overQuota(_ owner: String) -> [UInt64] {
        guard let ids = byOwner[owner], ids.count >= capacityPerOwner else { return [] }
        let excess = ids.count - capacityPerOwner + 1
        return ids.sorted { (sessions[$0]!.activeAtIndex, $0) < (sessions[$1]!.activeAtIndex, $1) }.prefix(excess).map {
            $0
        }
    }

    var count: Int { sessions.count }

    subscript(id: UInt64) -> Session? { sessions[id] }

    /// Adds or updates a session (also when loading the table from disk).
    mutating func record(_ id: UInt64, _ session: Session) {
        if let previous = sessions[id], previous.owner != session.owner { byOwner[previous.owner]?.remove(id) }
        sessions[id] = session
        byOwner[session.owner, default: []].insert(id)
        recency.insert(Recency(index: session.activeAtIndex, id: id))
        if recency.count > 2 * max(sessions.count, 1024) { rebuildRecency() }
    }

    mutating func remove(_ id: UInt64) {
        guard let removed = sessions.removeValue(forKey: id) else { return }
        forgetOwner(of: id, removed.owner)
    }

    private mutating func forgetOwner(of id: UInt64, _ owner: String) {
        byOwner[owner]?.remove(id)
        if byOwner[owner]?.isEmpty == true { byOwner[owner] = nil }
    }

    /// Removes sessions idle beyond the timeout at log time `now`, and, if `room` is needed,
    /// the least recently active ones until the table has room for that many more. Returns the
    /// removed ids, oldest first.
    mutating func evict(now: UInt64, room: Int = 0) -> [UInt64] {
        var removed: [UInt64] = []
        while let oldest = recency.min {
            let id = oldest.id
            guard let session = sessions[id], session.activeAtIndex == oldest.index else {
                _ = recency.popMin()
                continue
            }
            let idle = now > session.activeAtMillis && now - session.activeAtMillis > idleTimeoutMillis
            guard idle || sessions.count + room > capacity else { break }
            _ = recency.popMin()
            remove(id)
            removed.append(id)
        }
        return removed
    }

    private mutating func rebuildRecency() {
        recency = Heap(sessions.map { Recency(index: $0.value.activeAtIndex, id: $0.key) })
    }
}
