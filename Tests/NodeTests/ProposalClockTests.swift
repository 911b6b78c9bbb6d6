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
}
