import Raft

/// A harness over seeded random inputs, for CI where no fuzzer runs: the seed corpus, each
/// seed mutated (structure-aware where it applies, else bytes flipped, cut or grown), and plain
/// random bytes. The same seed gives the same inputs.
public struct PropertyRun {
    public let harness: Harness
    public let seed: UInt64

    public init(harness: Harness, seed: UInt64) {
        self.harness = harness
        self.seed = seed
    }

    /// `before` sees each input before it runs (the CLI saves it, so a crash leaves it behind).
    public func run(_ count: Int, before: ([UInt8]) -> Void = { _ in }) {
        var random = SeededRandom(seed: seed)
        let seeds = SeedCorpus.seeds(for: harness, limit: 200)
        for seed in seeds {
            before(seed)
            harness.run(seed)
        }
        for _ in 0..<max(0, count - seeds.count) {
            let next = input(&random, seeds: seeds)
            before(next)
            harness.run(next)
        }
    }

    func input(_ random: inout SeededRandom, seeds: [[UInt8]]) -> [UInt8] {
        guard !seeds.isEmpty, random.next(below: 5) != 0 else {
            return (0..<random.next(below: 512)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
        var input = seeds[Int(random.next(below: UInt64(seeds.count)))]
        for _ in 0...random.next(below: 3) {
            if harness.mutatesMessages, random.next(below: 2) == 0,
                let mutated = MessageMutator.mutate(input, harness: harness, seed: random.next())
            {
                input = mutated
                continue
            }
            switch random.next(below: 4) {
            case 0 where !input.isEmpty:
                input[Int(random.next(below: UInt64(input.count)))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
            case 1 where !input.isEmpty: input.removeLast(Int(random.next(below: UInt64(input.count))))
            case 2: input += (0..<random.next(below: 16)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            default:
                if !input.isEmpty {
                    input[Int(random.next(below: UInt64(input.count)))] =
                        [0, 0xFF, 0x7F, 0x80][Int(random.next(below: 4))]
                }
            }
        }
        return input
    }
}
