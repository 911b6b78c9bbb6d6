import Foundation
import FuzzHarness
import Testing

/// The fuzzing harnesses as property tests (CI runs no fuzzer): every harness over its seed
/// corpus and seeded random inputs, and every saved crash input (Regressions/<harness>/*)
/// replayed. A broken property traps, and the test process's crash names the harness.
@Suite struct HarnessPropertyTests {
    /// Inputs per harness: the consensus core costs a few elections per input.
    static func inputs(_ harness: Harness) -> Int { harness == .raftStep ? 10_000 : 20_000 }

    @Test(arguments: Harness.allCases)
    func harnessHoldsOverSeededRandomInputs(_ harness: Harness) {
        PropertyRun(harness: harness, seed: 20261203).run(Self.inputs(harness))
    }

    @Test(arguments: Harness.allCases)
    func savedCrashInputsStayFixed(_ harness: Harness) throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Regressions/\(harness.rawValue)"
        ).path
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for file in files.sorted() {
            let data = try #require(FileManager.default.contents(atPath: directory + "/" + file))
            harness.run(Array(data))
        }
    }

    /// The structure-aware mutator turns a decodable input into another decodable one.
    @Test func theMutatorKeepsMessagesDecodable() {
        let seeds = SeedCorpus.seeds(for: .raftStep, limit: 50)
        #expect(seeds.count == 50)
        var decodable = 0
        for (number, seed) in seeds.enumerated() {
            if let mutated = MessageMutator.mutate(seed, harness: .raftStep, seed: UInt64(number)) {
                decodable += 1
                #expect(mutated.first == seed.first, "the role byte stays")
            }
        }
        #expect(decodable == seeds.count)
    }
}
