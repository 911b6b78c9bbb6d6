import Identity
import Testing

/// The leader's count of the cluster's failed sign-ins: an attack begins past the threshold
/// within a minute and ends a full minute after the rate fell back; the application behind 90%
/// of the failures is named once per attack, and only when isolation is on.
@Suite struct AuthAttackWatchTests {
    @Test func anAttackBeginsPastTheThresholdAndEndsAMinuteAfterTheRateFalls() {
        let watch = AuthAttackWatch(threshold: 10, isolates: false)
        let start: UInt64 = 1_000_000_000
        for index in 0..<10 {
            let decision = watch.failed(application: "app", now: start + UInt64(index) * 1000)
            #expect(!decision.began && decision.block == nil && decision.failures == index + 1)
        }
        #expect(watch.attack(now: start + 10_000) == nil)
        let eleventh = watch.failed(application: "app", now: start + 10_000)
        #expect(eleventh.began && eleventh.failures == 11)
        #expect(eleventh.block == nil, "isolation is off")
        let attack = watch.attack(now: start + 20_000)
        #expect(attack?.sinceMillis == start + 10_000 && attack?.failures == 11)
        // Once begun it does not begin again while it lasts.
        #expect(!watch.failed(application: "app", now: start + 11_000).began)
        // The failures leave the window a minute on; the attack ends a minute after the last
        // failure that was over the threshold.
        #expect(watch.attack(now: start + 70_000) != nil)
        #expect(watch.attack(now: start + 71_000) == nil)
        // Failures spread thinner than the threshold never make one.
        for index in 0..<30 {
            #expect(!watch.failed(application: "app", now: start + 200_000 + UInt64(index) * 7_000).began)
        }
    }

    @Test func theApplicationBehindMostFailuresIsNamedOncePerAttack() {
        let watch = AuthAttackWatch(threshold: 10, isolates: true)
        let start: UInt64 = 5_000_000
        // Two applications with a few failures each, then one with many.
        _ = watch.failed(application: "branch", now: start)
        for index in 0..<9 { _ = watch.failed(application: "portal", now: start + UInt64(index)) }
        // 11 failures, portal behind 10 of them (90.9%): named.
        let named = watch.failed(application: "portal", now: start + 20)
        #expect(named.began && named.block == "portal" && named.blockedFailures == 10 && named.failures == 11)
        // Not again during the same attack.
        #expect(watch.failed(application: "portal", now: start + 30).block == nil)
        // An attack spread over many applications names none.
        let spread = AuthAttackWatch(threshold: 10, isolates: true)
        var blocks: [String] = []
        for index in 0..<40 {
            if let block = spread.failed(application: "app-\(index % 4)", now: start + UInt64(index)).block {
                blocks.append(block)
            }
        }
        #expect(blocks.isEmpty && spread.attack(now: start + 40) != nil)
    }

    @Test func applicationsCountedAtOnceAreBounded() {
        let watch = AuthAttackWatch(threshold: 1_000_000, isolates: true)
        for index in 0..<(AuthAttackWatch.maxApplicationsPerSlot + 500) {
            _ = watch.failed(application: "app-\(index)", now: 1_000)
        }
        // Every failure still counts (past the bound under one shared name).
        #expect(watch.failed(application: "late", now: 1_001).failures == AuthAttackWatch.maxApplicationsPerSlot + 501)
    }
}
