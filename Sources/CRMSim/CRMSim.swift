import ArgumentParser
import Dispatch
import Foundation
@_spi(Simulation) import Raft
@_spi(Simulation) import Simulation

/// crm-sim: runs seeds of the deterministic cluster simulator.
@main
struct CRMSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-sim",
        abstract: "Runs whole simulated clusters under faults and checks safety, liveness and linearizability.",
        discussion: """
            Each seed is one run: a cluster on a seeded scheduler with a simulated network and disk, \
            clients doing put/get/cas/delete, and faults (message loss, duplication, reordering, \
            partitions, crashes that lose unsynced writes, leadership transfers, membership changes, \
            compaction and snapshots) until the faults stop. The same seed always replays the same run.

            The last line is `seeds=N failures=F`; the exit status is 0 only when F is 0.
            """
    )

    @Option(help: "Voting members per cluster: 3, 5, or 3,5 to alternate by seed.")
    var nodes: String = "3"

    @Option(help: "How many seeds to run.")
    var seeds: UInt64 = 100

    @Option(help: "First seed.")
    var start: UInt64 = 0

    @Option(help: "Run only this seed (with --trace to print every step).")
    var seed: UInt64?

    @Flag(help: "Print every step of the run (with --seed).")
    var trace = false

    @Option(
        help:
            "Switch on a known bug to show that the simulator finds it: \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))."
    )
    var plantBug: String?

    @Option(help: "Worker threads (seeds run in parallel; each run stays deterministic).")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Stop at the first failing seed.")
    var stopAtFirstFailure = false

    @Option(help: "Print a progress line every this many seeds (0: none).")
    var progressEvery: UInt64 = 0

    @Option(help: "Failing seeds whose trace is printed (the last lines of each).")
    var tracedFailures: Int = 1

    func validate() throws {
        guard !voterCounts.isEmpty, voterCounts.allSatisfy({ (1...9).contains($0) }) else {
            throw ValidationError("--nodes takes 1 to 9 voters, or a comma-separated list such as 3,5")
        }
        if let plantBug, PlantedBug(rawValue: plantBug) == nil {
            throw ValidationError(
                "unknown bug '\(plantBug)'; choose one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
        if trace && seed == nil { throw ValidationError("--trace replays one run: give it with --seed S") }
    }

    private var voterCounts: [Int] { nodes.split(separator: ",").compactMap { Int($0) } }

    private var sweep: SeedSweep {
        var sweep = SeedSweep(seeds: start..<start + seeds, voterCounts: voterCounts, jobs: jobs)
        sweep.plantedBug = plantBug.flatMap(PlantedBug.init(rawValue:))
        sweep.stopAtFirstFailure = stopAtFirstFailure
        return sweep
    }

    private func options(for seed: UInt64) -> SimulationOptions { sweep.options(for: seed) }

    func run() throws {
        if let seed {
            let result = Simulation(options: options(for: seed), trace: trace ? { print($0) } : nil).run()
            report(single: result)
            print("seeds=1 failures=\(result.failure == nil ? 0 : 1)")
            if result.failure != nil { throw ExitCode(1) }
            return
        }
        let summary = runMany()
        if summary.failures > 0 { throw ExitCode(1) }
    }

    private func report(single result: SimulationResult) {
        print(
            "seed \(result.seed): \(result.steps) steps, \(result.simulatedMilliseconds) ms simulated, \(result.operations) operations checked"
        )
        print("profile: \(result.profile)")
        if let failure = result.failure { print("FAILED: \(failure)") }
    }

    private func runMany() -> (seeds: UInt64, failures: Int) {
        let every = progressEvery
        let report: @Sendable (SeedSweep.Summary) -> Void = { totals in
            guard totals.completed % every == 0 else { return }
            let line = String(
                format: "progress: %llu seeds, %d failures, %.0f seeds/minute, %.0f steps/second",
                totals.completed, totals.failures.count, totals.seedsPerMinute, totals.stepsPerSecond)
            print(line)
            fflush(nil) // every output stream: progress shows while the run goes on
        }
        let summary = sweep.run(progress: every == 0 ? nil : report)
        for result in summary.failures.prefix(max(tracedFailures, 0)) { printFailure(result) }
        for result in summary.failures {
            print("failing seed \(result.seed): \(result.failure!.split(separator: "\n").first!)")
        }
        print(
            String(
                format:
                    "ran %llu seeds (%@ voters) in %.1f s: %.0f seeds/minute, %.0f steps/second, %llu steps, %llu client operations checked",
                summary.completed, nodes, summary.seconds, summary.seedsPerMinute, summary.stepsPerSecond,
                summary.steps, summary.operations))
        print(
            "after the faults stopped, every run settled (leader serving, requests done, members equal) within "
                + "\(summary.worstSettleMilliseconds) simulated ms (bound \(summary.settleBoundMilliseconds) ms)")
        print("seeds=\(summary.completed) failures=\(summary.failures.count)")
        return (summary.completed, summary.failures.count)
    }

    /// Prints the failure and the end of the run's trace, replayed from its seed (which also
    /// shows that the failure reproduces).
    private func printFailure(_ result: SimulationResult) {
        print("seed \(result.seed) FAILED: \(result.failure!)")
        var lines: [String] = []
        let replay = Simulation(options: options(for: result.seed), trace: { lines.append($0) }).run()
        let shown = 60
        print("last \(min(shown, lines.count)) of \(lines.count) trace lines:")
        for line in lines.suffix(shown) { print("    \(line)") }
        print(
            replay.failure == result.failure && replay.steps == result.steps
                ? "replayed seed \(result.seed): same failure after \(replay.steps) steps"
                : "replayed seed \(result.seed): DIFFERENT outcome (\(replay.failure ?? "passed")) — the run is not deterministic"
        )
        var command = "crm-sim --nodes \(options(for: result.seed).voters) --seed \(result.seed) --trace"
        if let plantBug { command += " --plant-bug \(plantBug)" }
        print("replay with: \(command)")
    }
}
