/// Recent timed measurements (synced-write durations, loop lateness), oldest dropped first:
/// bounded both by count and by age.
struct TimedSamples: Sendable {
    private var samples: [(at: UInt64, nanoseconds: UInt64)] = []
    private var start = 0
    let capacity: Int

    init(capacity: Int = 1024) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    mutating func record(at now: UInt64, nanoseconds: UInt64) {
        if samples.count < capacity {
            samples.append((now, nanoseconds))
        } else {
            samples[start] = (now, nanoseconds)
            start = (start + 1) % capacity
        }
    }

    /// The durations recorded at or after `since`, oldest first.
    func values(since: UInt64) -> [UInt64] {
        let ordered = samples[start...] + samples[..<start]
        return ordered.filter { $0.at >= since }.map(\.nanoseconds)
    }
}

/// Synced writes, from the Raft log and the health probe: those that finished recently, and
/// any still in progress (a hung disk shows as one write that never ends).
struct SyncLatency: Sendable {
    enum Source: Hashable, Sendable { case raftLog, probe }

    private var finished = TimedSamples()
    private var inProgressSince: [Source: UInt64] = [:]

    mutating func begin(_ source: Source, at now: UInt64) { inProgressSince[source] = now }

    mutating func end(_ source: Source, at now: UInt64) {
        guard let started = inProgressSince.removeValue(forKey: source) else { return }
        finished.record(at: now, nanoseconds: now - min(started, now))
    }

    /// The verdict over the window ending `now`: failing when every synced write in it was
    /// slower than `slow` (at least two of them), or one has been running for the whole window.
    func assess(now: UInt64, window: UInt64, slow: UInt64) -> SyncAssessment {
        let recent = finished.values(since: now - min(window, now))
        let stuck = inProgressSince.values.map { now - min($0, now) }.max() ?? 0
        let sorted = recent.sorted()
        let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        let failing = (recent.count >= 2 && sorted.first! > slow) || stuck >= window
        return SyncAssessment(
            samples: recent.count, medianNanoseconds: median, worstNanoseconds: max(sorted.last ?? 0, stuck),
            stuckNanoseconds: stuck, failing: failing)
    }
}

public struct SyncAssessment: Sendable, Equatable {
    public var samples: Int
    public var medianNanoseconds: UInt64
    public var worstNanoseconds: UInt64
    public var stuckNanoseconds: UInt64
    public var failing: Bool
}
