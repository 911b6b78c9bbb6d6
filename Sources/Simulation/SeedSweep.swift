import Dispatch
@_spi(Simulation) import Raft
import Synchronization

/// Runs many seeds of the simulator on several threads (each run stays deterministic: it owns
/// its cluster and its generator) and collects the results.
public struct SeedSweep: Sendable {
    public var seeds: Range<UInt64>
    /// Voting members per run; a seed runs with `voterCounts[seed % count]`.
    public var voterCounts: [Int]
    @_spi(Simulation) public var plantedBug: PlantedBug?
    public var jobs: Int
    public var stopAtFirstFailure = false

    public init(seeds: Range<UInt64>, voterCounts: [Int], jobs: Int) {
        precondition(!voterCounts.isEmpty && voterCounts.allSatisfy { $0 >= 1 } && jobs >= 1)
        self.seeds = seeds
        self.voterCounts = voterCounts
        self.jobs = jobs
    }

    public func options(for seed: UInt64) -> SimulationOptions {
        var options = SimulationOptions(voters: voterCounts[Int(seed % UInt64(voterCounts.count))], seed: seed)
        options.plantedBug = plantedBug
        return options
    }

    /// What a sweep did. With `stopAtFirstFailure`, seeds after the first failure may not run.
    public struct Summary: Sendable {
        public var completed: UInt64 = 0
        public var steps: UInt64 = 0
        public var operations: UInt64 = 0
        public var seconds: Double = 0
        /// The longest time any run took to settle once its faults stopped (see
        /// `SimulationResult.settleMillisecondsAfterHealing`), and the bound it must stay within.
        public var worstSettleMilliseconds: UInt64 = 0
        public var settleBoundMilliseconds: UInt64 = SimulationOptions(voters: 3, seed: 0).livenessBoundMilliseconds
        /// Failed runs, by seed.
        public var failures: [SimulationResult] = []

        public var seedsPerMinute: Double { seconds > 0 ? Double(completed) / seconds * 60 : 0 }
        public var stepsPerSecond: Double { seconds > 0 ? Double(steps) / seconds : 0 }
    }

    /// Runs the sweep; `progress` is called (from worker threads, one call at a time) after
    /// each completed seed with the running totals.
    public func run(progress: (@Sendable (Summary) -> Void)? = nil) -> Summary {
        let state = Mutex(SweepState(next: seeds.lowerBound))
        let began = DispatchTime.now().uptimeNanoseconds
        @Sendable func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9 }
        DispatchQueue.concurrentPerform(iterations: jobs) { _ in
            while let seed = state.withLock({ $0.take(below: seeds.upperBound, stopping: stopAtFirstFailure) }) {
                let result = Simulation(options: options(for: seed)).run()
                state.withLock { sweep in
                    sweep.record(result)
                    sweep.summary.seconds = elapsed()
                    progress?(sweep.summary)
                }
            }
        }
        var summary = state.withLock { $0.summary }
        summary.seconds = elapsed()
        summary.failures.sort { $0.seed < $1.seed }
        return summary
    }

    private struct SweepState {
        var next: UInt64
        var summary = Summary()

        mutating func take(below end: UInt64, stopping: Bool) -> UInt64? {
            guard next < end, !(stopping && !summary.failures.isEmpty) else { return nil }
            defer { next += 1 }
            return next
        }

        mutating func record(_ result: SimulationResult) {
            summary.completed += 1
            summary.steps += UInt64(result.steps)
            summary.operations += UInt64(result.operations)
            if result.failure != nil { summary.failures.append(result) }
            summary.worstSettleMilliseconds = max(
                summary.worstSettleMilliseconds, result.settleMillisecondsAfterHealing ?? 0)
        }
    }
}
