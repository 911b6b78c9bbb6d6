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

    init(next: UInt64, maxInflight: Int, maxInflightBytes: Int = 0, isLearner: Bool) {
        self.next = next
        self.inflights = Inflights(capacity: maxInflight, maxBytes: maxInflightBytes)
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

    /// An append carrying `count` entries (`bytes` of them) up to `last` was sent.
    mutating func sentEntries(last: UInt64, count: Int, bytes: Int) {
        defer { assert(isConsistent, "progress invariant broken: match \(match), next \(next), state \(state)") }
        switch state {
        case .replicate:
            if count > 0 {
                next = last + 1
                inflights.add(last, bytes: bytes)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("sending entries to a follower that awaits a snapshot")
        }
    }
}

/// Indexes of the last entry of each append in flight to one follower, oldest first, with
/// their sizes, bounded: the leader stops sending when `capacity` appends are unanswered, or
/// when the unanswered ones carry `maxBytes` (0: no byte bound). The byte bound is what keeps
/// a follower that is far behind from being sent hundreds of large appends at once (it would
/// hold them all); one append always goes, whatever its size.
struct Inflights {
    let capacity: Int
    let maxBytes: Int
    private var indexes: [UInt64]
    private var sizes: [Int]
    private var start = 0
    private(set) var count = 0
    private(set) var bytes = 0

    init(capacity: Int, maxBytes: Int = 0) {
        precondition(capacity > 0 && maxBytes >= 0)
        self.capacity = capacity
        self.maxBytes = maxBytes
        indexes = [UInt64](repeating: 0, count: capacity)
        sizes = [Int](repeating: 0, count: capacity)
    }

    var isFull: Bool { count == capacity || (maxBytes > 0 && bytes >= maxBytes) }

    mutating func add(_ index: UInt64, bytes size: Int) {
        precondition(!isFull, "in-flight window overflow")
        precondition(size >= 0)
        let slot = (start + count) % capacity
        indexes[slot] = index
        sizes[slot] = size
        count += 1
        bytes += size
    }

    /// Forgets every append whose last index is at most `index` (acknowledged).
    mutating func freeTo(_ index: UInt64) {
        while count > 0 && indexes[start] <= index { freeFirst() }
    }

    /// Forgets the oldest append: used when a heartbeat answer shows the follower is alive but
    /// the window is full (its answers were lost), so that replication does not stall.
    mutating func freeFirst() {
        guard count > 0 else { return }
        bytes -= sizes[start]
        start = (start + 1) % capacity
        count -= 1
        assert(bytes >= 0 && (count > 0 || bytes == 0), "in-flight bytes out of step with the appends")
    }

    mutating func reset() {
        start = 0
        count = 0
        bytes = 0
    }
}
