/// The leader's view of one follower's log.
struct Progress {
    enum State: String {
        /// Unsure where the follower's log matches: one append at a time until one succeeds.
        case probe
        /// Matching: appends are pipelined, up to the in-flight window.
        case replicate
        /// Too far behind: a snapshot is on its way; appends wait for it.
        case snapshot
    }

    /// Highest index known to be on the follower.
    var match: UInt64 = 0
    /// Next index to send.
    var next: UInt64
    var state: State = .probe
    /// In probe state: an append was sent and no answer came yet (wait for one, or a heartbeat).
    var probeSent = false
    /// In snapshot state: the index of the snapshot sent.
    var pendingSnapshot: UInt64 = 0
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// The leader's lease clock when it sent the latest heartbeat this member acknowledged.
    var heartbeatAcknowledgedAt: UInt64?
    var inflights: Inflights
    let isLearner: Bool

    init(next: UInt64, maxInflight: Int, isLearner: Bool) {
        self.next = next
        self.inflights = Inflights(capacity: maxInflight)
        self.isLearner = isLearner
    }

    /// What the leader knows of a follower never contradicts where it sends next.
    var isConsistent: Bool { match < next }

    var isPaused: Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflights.isFull
        case .snapshot: return true
        }
    }

    mutating func becomeProbe() {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        if state == .snapshot {
            next = max(match + 1, pendingSnapshot + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        pendingSnapshot = 0
        inflights.reset()
    }

    mutating func becomeReplicate() {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        state = .replicate
        next = match + 1
        probeSent = false
        pendingSnapshot = 0
        inflights.reset()
    }

    mutating func becomeSnapshot(_ index: UInt64) {
        state = .snapshot
        pendingSnapshot = index
        probeSent = false
        inflights.reset()
    }

    /// The follower has everything up to `index`; returns false if that is old news.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// The follower rejected an append at `rejected`; `hint` is the index to try next (from the
    /// follower's log). Returns false if the rejection is stale.
    mutating func maybeDecrease(rejected: UInt64, hint: UInt64) -> Bool {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        if state == .replicate {
            // Only the rejection of the first entry after match is meaningful now.
            guard rejected > match else { return false }
            next = match + 1
            return true
        }
        // Probe: only the answer to the probe that was sent (at next - 1) counts. Never below
        // what the follower is known to have (a hint below `match` is stale or false).
        guard next - 1 == rejected else { return false }
        next = max(min(rejected, hint + 1), match + 1)
        probeSent = false
        return true
    }

    /// An append carrying entries up to `last` was sent.
    mutating func sentEntries(last: UInt64, count: Int) {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        switch state {
        case .replicate:
            if count > 0 {
                next = last + 1
                inflights.add(last)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("sending entries to a follower that awaits a snapshot")
        }
    }
}

/// Indexes of the last entry of each append in flight to one follower, oldest first, bounded:
/// the leader stops sending when `capacity` appends are unanswered.
struct Inflights {
    let capacity: Int
    private var buffer: [UInt64]
    private var start = 0
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        buffer = [UInt64](repeating: 0, count: capacity)
    }

    var isFull: Bool { count == capacity }

    mutating func add(_ index: UInt64) {
        precondition(!isFull, "in-flight window overflow")
        buffer[(start + count) % capacity] = index
        count += 1
    }

    /// Forgets every append whose last index is at most `index` (acknowledged).
    mutating func freeTo(_ index: UInt64) {
        while count > 0 && buffer[start] <= index {
            start = (start + 1) % capacity
            count -= 1
        }
    }

    /// Forgets the oldest append: used when a heartbeat answer shows the follower is alive but
    /// the window is full (its answers were lost), so that replication does not stall.
    mutating func freeFirst() {
        guard count > 0 else { return }
        start = (start + 1) % capacity
        count -= 1
    }

    mutating func reset() {
        start = 0
        count = 0
    }
}
