import Testing

@testable import Node

/// The audit queue's record for AUDIT_BACKLOG and `/metrics`: an overflow opens a window that
/// each further overflow within a minute extends and counts into; a minute without one closes
/// it, and the next overflow opens a new one. The running total never resets.
@Suite struct AuditBacklogTests {
    @Test func overflowsOpenAWindowThatAMinuteWithoutOneCloses() {
        let backlog = AuditBacklog(capacity: 100)
        #expect(backlog.overflow(now: 1_000) == nil, "no overflow yet")
        backlog.queued(100)
        backlog.refused(1, now: 1_000)
        backlog.refused(3, now: 40_000)
        let open = backlog.overflow(now: 90_000)
        #expect(open == AuditBacklog.Overflow(firstMillis: 1_000, lastMillis: 40_000, refusedEntries: 4))
        #expect(backlog.overflow(now: 40_000 + AuditBacklog.holdMillis) == nil, "a minute after the last one")

        backlog.refused(2, now: 200_000)
        #expect(backlog.overflow(now: 200_001) == .init(firstMillis: 200_000, lastMillis: 200_000, refusedEntries: 2))
        backlog.queued(7)
        let counts = backlog.counts
        #expect(counts.queued == 7 && counts.refusedTotal == 6)
    }
}
