import Engine
import Raft
import Testing

@testable import Node

@Suite struct HealthTests {
    static let ms: UInt64 = 1_000_000

    @Test func aDiskIsFailingOnlyWhenEverySyncInTheWindowWasSlow() {
        var latency = SyncLatency()
        var now: UInt64 = 10_000 * Self.ms
        for duration: UInt64 in [1, 300, 2, 400] {
            latency.begin(.raftLog, at: now)
            now += duration * Self.ms
            latency.end(.raftLog, at: now)
        }
        var verdict = latency.assess(now: now, window: 2000 * Self.ms, slow: 200 * Self.ms)
        #expect(!verdict.failing && verdict.samples == 4 && verdict.worstNanoseconds == 400 * Self.ms)
        now += 2001 * Self.ms
        for _ in 0..<3 {
            latency.begin(.probe, at: now)
            now += 250 * Self.ms
            latency.end(.probe, at: now)
        }
        verdict = latency.assess(now: now, window: 2000 * Self.ms, slow: 200 * Self.ms)
        #expect(verdict.failing && verdict.samples == 3)
    }

    @Test func aSyncThatNeverEndsCountsAsAFailingDisk() {
        var latency = SyncLatency()
        latency.begin(.raftLog, at: 1000 * Self.ms)
        #expect(!latency.assess(now: 2000 * Self.ms, window: 2000 * Self.ms, slow: 200 * Self.ms).failing)
        let verdict = latency.assess(now: 3000 * Self.ms, window: 2000 * Self.ms, slow: 200 * Self.ms)
        #expect(verdict.failing && verdict.stuckNanoseconds == 2000 * Self.ms)
    }

    @Test func timedSamplesKeepTheNewestWithinCapacity() {
        var samples = TimedSamples(capacity: 3)
        for at: UInt64 in 1...5 { samples.record(at: at, nanoseconds: at * 10) }
        #expect(samples.values(since: 0) == [30, 40, 50])
        #expect(samples.values(since: 4) == [40, 50])
    }

    @Test func handOffGoesToAHealthyCaughtUpReachableVoter() {
        var status = EngineStatus(id: 1)
        status.role = .leader
        status.voters = [1, 2, 3, 4]
        status.matchIndexes = [2: 100, 3: 90, 4: 100]
        status.lastContactMilliseconds = [2: 50, 3: 50, 4: 5000]
        var healthy = PeerObservation()
        healthy.report = HealthReport(state: .healthy, reasons: [])
        var full = PeerObservation()
        full.report = HealthReport(state: .degraded, reasons: ["NOSPACE: ..."])
        full.alarms = [.noSpace]
        #expect(
            HealthMonitor.handOffTarget(status, [2: healthy, 3: healthy, 4: healthy], electionTimeout: 500) == 2,
            "4 is unreachable; 2 is further ahead than 3")
        #expect(
            HealthMonitor.handOffTarget(status, [2: full, 3: healthy, 4: healthy], electionTimeout: 500) == 3,
            "never to a member with a disk alarm")
        #expect(HealthMonitor.handOffTarget(status, [2: full, 3: full], electionTimeout: 500) == nil)
        var skewed = healthy
        skewed.alarms = [.clockSkew, .authAttack]
        #expect(
            HealthMonitor.handOffTarget(status, [2: skewed, 3: healthy], electionTimeout: 500) == 2,
            "advisory alarms do not keep leadership away")
    }

    @Test func deadMemberAdviceAddsThePromotesThenRemoves() {
        let spare = MemberEndpoints(
            id: 4, peer: Endpoint("10.0.0.14:7001")!, client: Endpoint("10.0.0.14:7101")!,
            admin: Endpoint("10.0.0.14:7201")!)
        #expect(
            DeadMember.commands(replacing: 2, with: spare) == [
                "crmctl members add-learner 4 --peer 10.0.0.14:7001 --client 10.0.0.14:7101 --admin 10.0.0.14:7201",
                "crmctl members list   # wait until member 4 shows lag 0",
                "crmctl members promote 4",
                "crmctl members remove 2",
            ])
        #expect(DeadMember.commands(replacing: 2, with: nil).first?.contains("<new-id>") == true)
    }

    @Test func faultHooksExistInDebugBuildsOnly() {
        let hooks = FaultHooks(path: "/nonexistent/faults.json")
        #if DEBUG
        #expect(hooks.isActive)
        #else
        #expect(!hooks.isActive, "a release build never reads a fault file")
        #endif
    }
}
