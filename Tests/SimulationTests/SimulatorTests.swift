import Foundation
@_spi(Simulation) import Raft
import Testing

@_spi(Simulation) @testable import Simulation

/// The simulator itself: whole 3- and 5-node clusters under every fault, checked after every
/// step and at the end; runs replay exactly; and planted bugs are found.
@Suite struct SimulatorTests {
    /// The CI sweep: 500 seeds, alternating 3 and 5 voters, every fault schedule.
    @Test func fiveHundredSeedsOfThreeAndFiveNodeClustersUnderFaultsPass() {
        let summary = SeedSweep(seeds: 0..<500, voterCounts: [3, 5], jobs: 2).run()
        #expect(summary.completed == 500)
        for failure in summary.failures { Issue.record("seed \(failure.seed): \(failure.failure!)") }
        // The runs did real work: thousands of client operations were checked.
        #expect(summary.operations > 10_000)
        #expect(
            summary.worstSettleMilliseconds > 0 && summary.worstSettleMilliseconds <= summary.settleBoundMilliseconds)
        print(
            String(
                format:
                    "simulator: %llu seeds in %.1f s (%.0f seeds/minute, %.0f steps/second), %llu operations checked",
                summary.completed, summary.seconds, summary.seedsPerMinute, summary.stepsPerSecond, summary.operations))
    }

    @Test func aSeedReplaysStepForStep() {
        func trace(_ seed: UInt64) -> [String] {
            var lines: [String] = []
            _ = Simulation(options: SimulationOptions(voters: 5, seed: seed), trace: { lines.append($0) }).run()
            return lines
        }
        let first = trace(42)
        #expect(first.count > 1000)
        #expect(first == trace(42))
        #expect(first != trace(43))
    }

    /// Every run draws from every kind of fault over a sweep (the profile names them).
    @Test func sweepsCoverEveryFaultMixAndClusterSize() {
        var mixes: Set<String> = []
        for seed in UInt64(0)..<64 {
            let result = Simulation(options: SimulationOptions(voters: 3, seed: seed)).run()
            for mix in FaultMix.allCases where result.profile.contains("(\(mix.rawValue))") {
                mixes.insert(mix.rawValue)
            }
        }
        #expect(mixes == Set(FaultMix.allCases.map(\.rawValue)))
    }

    /// A simulator that never fails proves nothing: each planted bug is found within a bounded
    /// number of seeds, by the property it breaks, and the failing seed replays to the same
    /// failure.
    @Test(arguments: PlantedBug.allCases)
    func plantedBugIsFound(_ bug: PlantedBug) throws {
        var sweep = SeedSweep(seeds: 0..<2000, voterCounts: [3, 5], jobs: 2)
        sweep.plantedBug = bug
        sweep.stopAtFirstFailure = true
        let summary = sweep.run()
        let found = try #require(summary.failures.first, "\(bug.rawValue) not found in 2000 seeds")
        let failure = found.failure!
        let expected: [String]
        switch bug {
        case .oldTermCommit: expected = ["leader completeness", "committed entry changed", "linearizability"]
        case .forgetVote: expected = ["vote safety", "election safety"]
        case .staleRead: expected = ["read safety", "linearizability"]
        case .noPersistBeforeSend:
            expected = ["leader completeness", "vote safety", "election safety", "committed entry changed"]
        case .readBeforeApplied: expected = ["linearizability"]
        case .waiterIgnoresTerm: expected = ["linearizability", "session safety"]
        case .transactionChecksOneCondition: expected = ["record indexes"]
        case .auditHeadBeforeBatch: expected = ["audit chain", "state machine safety"]
        }
        #expect(expected.contains { failure.hasPrefix($0) }, "\(bug.rawValue) failed as: \(failure)")
        let replay = Simulation(options: sweep.options(for: found.seed)).run()
        #expect(replay.failure == failure && replay.steps == found.steps)
        print(
            "planted bug \(bug.rawValue): found at seed \(found.seed) after \(summary.completed) seeds: \(failure.prefix(160))"
        )
    }

    /// The same bugs, through the command line: non-zero exit status and the failing seed.
    @Test func crmSimExitsNonZeroAndPrintsTheSeedWhenItFindsABug() throws {
        let clean = try CRMSimProcess.run(["--nodes", "3,5", "--seeds", "20"])
        #expect(clean.status == 0)
        #expect(clean.output.hasSuffix("seeds=20 failures=0\n"))

        let planted = try CRMSimProcess.run([
            "--nodes", "3", "--seeds", "300", "--plant-bug", "stale-read", "--stop-at-first-failure",
        ])
        #expect(planted.status == 1)
        #expect(planted.output.contains("failing seed "))
        #expect(planted.output.contains("replay with: crm-sim --nodes 3 --seed "))
        #expect(planted.output.contains("same failure after"))

        let bad = try CRMSimProcess.run(["--plant-bug", "no-such-bug"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("unknown bug 'no-such-bug'"))
    }
}

/// Runs the `crm-sim` executable that was built next to the tests.
enum CRMSimProcess {
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = try executable()
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    /// The build directory holds the test bundle and the executables side by side.
    static func executable() throws -> URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("crm-sim")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory.deleteLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let fallback = root.appendingPathComponent(".build/debug/crm-sim")
        guard FileManager.default.isExecutableFile(atPath: fallback.path) else {
            throw CocoaError(
                .fileNoSuchFile, userInfo: [NSFilePathErrorKey: "crm-sim (build it with `swift build` first)"])
        }
        return fallback
    }
}
