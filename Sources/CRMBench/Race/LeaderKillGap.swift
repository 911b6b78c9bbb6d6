import ClusterHarness
import Foundation
import GRPCCore
import Synchronization

/// How long a system accepts no new write after its leader is killed: writers put through every
/// member (three each), the leader is killed with SIGKILL, and the gap is the time from the kill
/// to the first write that was *sent after the kill* and succeeded. Writes sent before the kill
/// and answered after it do not count: they say nothing about whether the system has recovered.
enum LeaderKillGap {
    /// One system, as the measurement needs it.
    struct System {
        var name: String
        var members: Int
        /// The index of the leader every member agrees on, nil while there is none.
        var leader: () async -> Int?
        /// A fresh connection to member `index`'s client endpoint.
        var connect: (_ index: Int) throws -> any RaceConnection
        var kill9: (_ index: Int) -> Void
        /// Starts the member again and returns once every member agrees on a leader.
        var restart: (_ index: Int) async throws -> Void
    }

    static let writersPerMember = 3
    /// Each write's deadline: long enough for a commit, short enough to retry soon after a new leader.
    static let writeTimeout = Duration.seconds(1)
    /// Steady writes before the kill, so that every connection is up.
    static let before = Duration.seconds(1)
    /// A gap longer than this ends the round as a failure.
    static let limitSeconds = 30.0

    /// Gaps in seconds, one per round; each round kills the leader of that moment and restarts it.
    static func measure(
        _ system: System, rounds: Int, keys: Int, value: Data, progress: (String) -> Void
    )
        async throws -> [Double]
    {
        var gaps: [Double] = []
        for round in 1...rounds {
            guard let leader = await system.leader() else {
                throw HarnessError("\(system.name) has no leader before leader-kill round \(round)")
            }
            let connections = try (0..<system.members).flatMap { index in
                try (0..<writersPerMember).map { _ in try system.connect(index) }
            }
            let gap = await oneRound(connections: connections, keys: keys, value: value) { system.kill9(leader) }
            for connection in connections { await connection.close() }
            guard let gap else {
                throw HarnessError("\(system.name) took no write for \(limitSeconds) s after its leader was killed")
            }
            gaps.append(gap)
            progress(
                "\(system.name) leader-kill round \(round): member \(leader + 1) killed, gap \(Int(gap * 1000)) ms")
            try await system.restart(leader)
        }
        return gaps
    }

    /// Runs the writers, kills, and returns the gap (nil past the limit).
    private static func oneRound(
        connections: [any RaceConnection], keys: Int, value: Data, kill: () -> Void
    ) async -> Double? {
        let clock = KillClock()
        return await withTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask { await write(connection, keys: keys, value: value, clock: clock) }
            }
            try? await Task.sleep(for: before)
            let kill0 = DispatchTime.now().uptimeNanoseconds
            kill()
            clock.killedAt.store(kill0, ordering: .sequentiallyConsistent)
            let limit = kill0 + UInt64(limitSeconds * 1e9)
            while clock.firstSuccessAfter.load(ordering: .sequentiallyConsistent) == 0,
                DispatchTime.now().uptimeNanoseconds < limit
            {
                try? await Task.sleep(for: .milliseconds(5))
            }
            clock.stop.store(true, ordering: .sequentiallyConsistent)
            await group.waitForAll()
            let first = clock.firstSuccessAfter.load(ordering: .sequentiallyConsistent)
            return first == 0 ? nil : Double(first - kill0) / 1e9
        }
    }

    private static func write(
        _ connection: any RaceConnection, keys: Int, value: Data, clock: KillClock
    ) async {
        var options = CallOptions.defaults
        options.timeout = writeTimeout
        while !clock.stop.load(ordering: .relaxed) {
            let sent = DispatchTime.now().uptimeNanoseconds
            let kill = clock.killedAt.load(ordering: .sequentiallyConsistent)
            do {
                try await connection.put(key: RaceLoad.key(Int.random(in: 0..<keys)), value: value, options: options)
                if kill != 0 && sent > kill {
                    _ = clock.firstSuccessAfter.compareExchange(
                        expected: 0, desired: DispatchTime.now().uptimeNanoseconds, ordering: .sequentiallyConsistent)
                }
            } catch {
                // A refused connection fails at once; do not spin on it.
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
    }
}

/// What the writers of one round share: when the leader was killed, when the first write sent
/// after that succeeded (0: not yet), and whether to stop.
private final class KillClock: Sendable {
    let killedAt = Atomic<UInt64>(0)
    let firstSuccessAfter = Atomic<UInt64>(0)
    let stop = Atomic<Bool>(false)
}
