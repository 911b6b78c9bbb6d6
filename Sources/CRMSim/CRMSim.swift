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

    @Option(help: "Switch on a known bug to show that the simulator finds it: \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", ")).")
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
            throw ValidationError("unknown bug '\(plantBug)'; choose one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
        if trace && seed == nil { throw ValidationError("--trace replays one run: give it with --seed S") }
    }

    private var voterCounts: [Int] { nodes.split(separator: ",").compactMap { Int($0) } }

    private func options(for seed: UInt64) -> SimulationOptions {
        let counts = voterCounts
        var options = SimulationOptions(voters: counts[Int(seed % UInt64(counts.count))], seed: seed)
        options.plantedBug = plantBug.flatMap(PlantedBug.init(rawValue:))
        return options
    }

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
        print("seed \(result.seed): \(result.steps) steps, \(result.simulatedMilliseconds) ms simulated, \(result.operations) operations checked")
        print("profile: \(result.profile)")
        if let failure = result.failure { print("FAILED: \(failure)") }
    }

    private func runMany() -> (seeds: UInt64, failures: Int) {
        let runner = SeedRunner(start: start, count: seeds, stopAtFirstFailure: stopAtFirstFailure)
        let began = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: jobs) { _ in
            while let seed = runner.nextSeed() {
                let result = Simulation(options: options(for: seed)).run()
                let done = runner.record(result)
                if progressEvery > 0 && done % progressEvery == 0 {
                    printProgress(runner: runner, began: began)
                }
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
        let (completed, steps, operations, failed) = runner.totals
        for result in failed.sorted(by: { $0.seed < $1.seed }).prefix(max(tracedFailures, 0)) {
            printFailure(result)
        }
        for result in failed.sorted(by: { $0.seed < $1.seed }) {
            print("failing seed \(result.seed): \(result.failure!.split(separator: "\n").first!)")
        }
        let perMinute = Double(completed) / seconds * 60
        print(String(format: "ran %llu seeds (%@ voters) in %.1f s: %.0f seeds/minute, %.0f steps/second, %llu steps, %llu client operations checked",
                     completed, nodes, seconds, perMinute, Double(steps) / seconds, steps, operations))
        print("seeds=\(completed) failures=\(failed.count)")
        return (completed, failed.count)
    }

    private func printProgress(runner: SeedRunner, began: UInt64) {
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
        let (completed, steps, _, failed) = runner.totals
        print(String(format: "progress: %llu seeds, %d failures, %.0f seeds/minute, %.0f steps/second",
                     completed, failed.count, Double(completed) / seconds * 60, Double(steps) / seconds))
        fflush(nil)  // all output streams: progress shows while the run goes on
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
        print(replay.failure == result.failure && replay.steps == result.steps
              ? "replayed seed \(result.seed): same failure after \(replay.steps) steps"
              : "replayed seed \(result.seed): DIFFERENT outcome (\(replay.failure ?? "passed")) — the run is not deterministic")
        var command = "crm-sim --nodes \(options(for: result.seed).voters) --seed \(result.seed) --trace"
        if let plantBug { command += " --plant-bug \(plantBug)" }
        print("replay with: \(command)")
    }
}

/// Hands out seeds to worker threads and collects their results.
final class SeedRunner: @unchecked Sendable {
    private let lock = NSLock()
    private var next: UInt64
    private let end: UInt64
    private let stopAtFirstFailure: Bool
    private var completed: UInt64 = 0
    private var steps: UInt64 = 0
    private var operations: UInt64 = 0
    private var failed: [SimulationResult] = []

    init(start: UInt64, count: UInt64, stopAtFirstFailure: Bool) {
        next = start
        end = start + count
        self.stopAtFirstFailure = stopAtFirstFailure
    }

    func nextSeed() -> UInt64? {
        lock.withLock {
            guard next < end, !(stopAtFirstFailure && !failed.isEmpty) else { return nil }
            defer { next += 1 }
            return next
        }
    }

    /// Returns how many seeds have completed.
    func record(_ result: SimulationResult) -> UInt64 {
        lock.withLock {
            completed += 1
            steps += UInt64(result.steps)
            operations += UInt64(result.operations)
            if result.failure != nil { failed.append(result) }
            return completed
        }
    }

    var totals: (UInt64, UInt64, UInt64, [SimulationResult]) {
        lock.withLock { (completed, steps, operations, failed) }
    }
}
