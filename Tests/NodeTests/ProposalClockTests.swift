import Dispatch
import Foundation
import Testing

@testable import Node

/// The stamps a leader puts on proposals: monotonic within a term from the log clock, never
/// the wall clock once the log clock has started.
@Suite struct ProposalClockTests {
    @Test func withinATermStampsFollowTheMonotonicClockFromTheLogClock() async throws {
        let clock = ProposalClock()
        let began = DispatchTime.now().uptimeNanoseconds
        let first = clock.stamp(term: 3, logClockMillis: 1_000)
        try await Task.sleep(nanoseconds: 120_000_000)
        let later = clock.stamp(term: 3, logClockMillis: 999_999_999)
        let elapsed = (DispatchTime.now().uptimeNanoseconds - began) / 1_000_000
        #expect(first >= 1_000 && first <= 1_000 + elapsed, "anchored at the log clock: \(first)")
        #expect(
            later - first >= 120 && later - 1_000 <= elapsed,
            "advanced by the time that passed (\(elapsed) ms), not by the log clock passed in: \(later)")
    }

    @Test func aNewTermAnchorsAgainAtTheLogClock() {
        let clock = ProposalClock()
        _ = clock.stamp(term: 1, logClockMillis: 5_000)
        let began = DispatchTime.now().uptimeNanoseconds
        let next = clock.stamp(term: 2, logClockMillis: 7_000)
        let elapsed = (DispatchTime.now().uptimeNanoseconds - began) / 1_000_000
        #expect(next >= 7_000 && next <= 7_000 + elapsed, "\(next)")
    }

    @Test func aNewClusterStartsFromTheWallClock() {
        let before = UInt64(Date().timeIntervalSince1970 * 1000)
        let stamp = ProposalClock().stamp(term: 1, logClockMillis: 0)
        let after = UInt64(Date().timeIntervalSince1970 * 1000)
        #expect(stamp >= before && stamp <= after, "\(stamp) not within [\(before), \(after)]")
    }

    /// Callers on many threads (a leader's API, a follower forwarding its front's writes) stamp
    /// at once while the term moves: each stamp stays within its term's anchor and the time since.
    @Test func concurrentCallersAcrossTermChangesGetStampsFromTheirTermsAnchor() async {
        let clock = ProposalClock()
        let began = DispatchTime.now().uptimeNanoseconds
        let stamps = await withTaskGroup(of: [UInt64].self) { group in
            for caller in 0..<8 {
                group.addTask {
                    (0..<5_000).map { step in clock.stamp(term: UInt64(1 + (step + caller) % 3), logClockMillis: 10_000)
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        let elapsed = (DispatchTime.now().uptimeNanoseconds - began) / 1_000_000
        #expect(stamps.count == 40_000)
        #expect(stamps.allSatisfy { $0 >= 10_000 && $0 <= 10_000 + elapsed }, "a stamp outside its anchor's range")
    }
}
