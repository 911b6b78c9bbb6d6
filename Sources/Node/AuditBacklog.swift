import Synchronization

/// How full this member's queue of audit entries waiting to be written is, and when it last
/// overflowed. The recorder keeps it; the health monitor raises AUDIT_BACKLOG from it and
/// `/metrics` shows it. An overflow refuses reads (nothing is released unaudited), so it is
/// worth an operator's look even in the asynchronous mode, where no read waits for the trail.
public final class AuditBacklog: Sendable {
    /// Entries the queue holds at most (`crm.audit_queue_entries`).
    public let capacity: Int
    /// The alarm stays this long after the last overflow.
    public static let holdMillis: UInt64 = 60_000

    /// Overflows since the alarm's window began.
    public struct Overflow: Equatable, Sendable {
        public var firstMillis: UInt64
        public var lastMillis: UInt64
        /// Entries refused (one per read refused) since `firstMillis`.
        public var refusedEntries: Int
    }

    private struct State {
        var queued = 0
        var refusedTotal: UInt64 = 0
        var overflow: Overflow?
    }
    private let state = Mutex(State())

    public init(capacity: Int) {
        precondition(capacity > 0, "the audit queue holds at least one entry")
        self.capacity = capacity
    }

    /// The recorder's queue now holds `count` entries.
    func queued(_ count: Int) {
        assert((0...capacity).contains(count), "the audit queue holds \(count) entries, past its \(capacity)")
        state.withLock { $0.queued = count }
    }

    /// `entries` were refused at `now` because the queue was full.
    func refused(_ entries: Int, now: UInt64) {
        precondition(entries > 0, "an overflow refuses at least one entry")
        state.withLock { state in
            state.refusedTotal += UInt64(entries)
            if var overflow = state.overflow, now < overflow.lastMillis + Self.holdMillis {
                overflow.lastMillis = max(overflow.lastMillis, now)
                overflow.refusedEntries += entries
                state.overflow = overflow
            } else {
                state.overflow = Overflow(firstMillis: now, lastMillis: now, refusedEntries: entries)
            }
        }
    }

    /// The overflows of the alarm's window: nil once `holdMillis` passed since the last one.
    public func overflow(now: UInt64) -> Overflow? {
        state.withLock { state in
            guard let overflow = state.overflow, now < overflow.lastMillis + Self.holdMillis else { return nil }
            return overflow
        }
    }

    /// Entries queued now, and entries refused since the member started.
    public var counts: (queued: Int, refusedTotal: UInt64) { state.withLock { ($0.queued, $0.refusedTotal) } }
}
