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
        var lastSequence: UInt64
        var lastOutcome: KVOutcome?
        /// Log index of the session's last command (its recency).
        var activeAtIndex: UInt64
        /// Log time of the session's last command.
        var activeAtMillis: UInt64
    }

    let capacity: Int
    let idleTimeoutMillis: UInt64
    private(set) var sessions: [UInt64: Session] = [:]
    /// (activeAtIndex, session) for every touch; entries whose index is no longer the
    /// session's are stale and skipped. Rebuilt when it grows past twice the table.
    private var recency = Heap<Recency>()

    private struct Recency: Comparable {
        var index: UInt64
        var id: UInt64
        static func < (a: Recency, b: Recency) -> Bool { (a.index, a.id) < (b.index, b.id) }
    }

    init(capacity: Int, idleTimeoutMillis: UInt64) {
        precondition(capacity > 0 && idleTimeoutMillis > 0)
        self.capacity = capacity
        self.idleTimeoutMillis = idleTimeoutMillis
    }

    var count: Int { sessions.count }

    subscript(id: UInt64) -> Session? { sessions[id] }

    /// Adds or updates a session (also when loading the table from disk).
    mutating func record(_ id: UInt64, _ session: Session) {
        sessions[id] = session
        recency.insert(Recency(index: session.activeAtIndex, id: id))
        if recency.count > 2 * max(sessions.count, 1024) { rebuildRecency() }
    }

    mutating func remove(_ id: UInt64) {
        sessions[id] = nil
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
            sessions[id] = nil
            removed.append(id)
        }
        return removed
    }

    private mutating func rebuildRecency() {
        recency = Heap(sessions.map { Recency(index: $0.value.activeAtIndex, id: $0.key) })
    }
}
