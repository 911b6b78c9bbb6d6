import Foundation
import Testing

@testable import CRMChaos

/// Scenario files: every file under chaos/ loads, and a wrong one is refused with a reason.
@Suite struct ScenarioTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func load(_ text: String) throws -> Scenario {
        let path = NSTemporaryDirectory() + "scenario-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Scenario.load(path)
    }

    static func problems(_ faults: String, nodes: Int = 3) -> String {
        do {
            _ = try load(
                "name: t\nnodes: \(nodes)\nduration_s: 10\nclients: 2\nkeys: 4\nrecovery_bound_s: 3\nfaults:\n\(faults)\n"
            )
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func everyScenarioFileUnderChaosLoads() throws {
        let directory = Self.repository.appendingPathComponent("chaos")
        let files =
            try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
                $0.hasSuffix(".yaml") && !$0.contains("suite")
            }
            + ["planted/stale-reads.yaml", "planted/ack-before-commit.yaml"]
        #expect(files.count >= 16)
        var kinds: Set<Scenario.Fault.Kind> = []
        for file in files {
            let scenario = try Scenario.load(directory.appendingPathComponent(file).path)
            kinds.formUnion(scenario.faults.map(\.kind))
        }
        #expect(
            kinds.isSuperset(of: Scenario.Fault.Kind.allCases.filter { $0 != .heal }),
            "every fault kind has a drill: \(kinds)")
    }

    @Test func aFaultWithoutWhatItNeedsIsRefused() {
        #expect(Self.problems("  - {at_s: 1, kind: partition, target: leader}").contains("needs a shape"))
        #expect(Self.problems("  - {at_s: 1, kind: kill}").contains("needs a target"))
        #expect(Self.problems("  - {at_s: 1, kind: kill, target: all}").contains("target all is for"))
        #expect(
            Self.problems("  - {at_s: 1, kind: kill, target: leader, duration_s: 2}").contains("only temporary faults"))
        #expect(Self.problems("  - {at_s: 1, kind: kill, target: leader, count: 3}", nodes: 5) == "")
        #expect(
            Self.problems("  - {at_s: 1, kind: kill, target: leader, count: 4}", nodes: 5).contains(
                "count is for kill, 1 to 3"))
        #expect(Self.problems("  - {at_s: 1, kind: pause, target: leader, count: 2}").contains("count is for kill"))
        #expect(Self.problems("  - {at_s: 1, kind: network, target: all}").contains("needs delay_ms or loss_percent"))
        #expect(
            Self.problems("  - {at_s: 1, kind: slow-fsync, target: leader}").contains("delay_ms must be 1 to 10000"))
        #expect(Self.problems("  - {at_s: 1, kind: clock-jump, target: leader}").contains("non-zero offset_s"))
        #expect(Self.problems("  - {at_s: 1, kind: damage, target: follower}").contains("needs a file"))
        #expect(Self.problems("  - {at_s: 11, kind: restart}").contains("inside the run"))
        #expect(Self.problems("  - {at_s: 1, kind: explode, target: leader}").contains("not a valid scenario"))
    }

    @Test func whatADrillNeedsFollowsFromItsFaults() throws {
        let plain = try Self.load(
            "name: t\nnodes: 3\nduration_s: 10\nclients: 2\nkeys: 4\nrecovery_bound_s: 3\nfaults:\n  - {at_s: 1, kind: kill, target: leader}\n"
        )
        #expect(!plain.needsProxies && !plain.needsFaultHook)
        let cut = try Self.load(
            "name: t\nnodes: 3\nduration_s: 10\nclients: 2\nkeys: 4\nrecovery_bound_s: 3\nfaults:\n  - {at_s: 1, kind: partition, shape: isolate, target: leader}\n"
        )
        #expect(cut.needsProxies && !cut.needsFaultHook)
        let planted = try Self.load(
            "name: t\nnodes: 3\nduration_s: 10\nclients: 2\nkeys: 4\nrecovery_bound_s: 3\nplanted_bug: stale_reads\nfaults: []\n"
        )
        #expect(planted.needsFaultHook)
        #expect(throws: ChaosError.self) {
            try Self.load(
                "name: t\nnodes: 3\nduration_s: 10\nclients: 2\nkeys: 4\nrecovery_bound_s: 3\nplanted_bug: everything\nfaults: []\n"
            )
        }
    }
}
