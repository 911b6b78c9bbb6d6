import Foundation
import Testing

/// crm-chaos itself, on real processes.
extension RealProcessTests {
@Suite struct ChaosProcessTests {
    /// The kill-leader drill passes and leaves its report: history, faults, throughput, logs, summary.
    @Test func theKillLeaderDrillPassesAndWritesItsReport() throws {
        let report = NSTemporaryDirectory() + "crm-chaos-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: report) }
        let repository = ProcessCluster.repository.path
        let run = try ProcessCluster.tool("crm-chaos", ["run", repository + "/chaos/kill-leader.yaml", "--report", report, "--repository", repository])
        print(run.output.split(separator: "\n").filter { $0.hasPrefix("PASS") || $0.hasPrefix("FAIL") }.joined(separator: "\n"))
        #expect(run.status == 0, "\(run.output)\n\(run.errors)")
        #expect(run.output.contains("PASSED kill-leader"))
        for check in ["available", "final reads", "linearizable", "members converged"] {
            #expect(run.output.contains("PASS \(check)"), "\(check) missing from the verdict")
        }
        for file in ["history.jsonl", "faults.txt", "throughput.csv", "summary.json", "node-1.log", "node-2.log", "node-3.log"] {
            #expect(FileManager.default.fileExists(atPath: report + "/" + file), "\(file) missing from the report")
        }
        let history = try String(contentsOfFile: report + "/history.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(history.count > 200, "the workload recorded \(history.count) events")
        let first = try #require(try JSONSerialization.jsonObject(with: Data(history[0].utf8)) as? [String: Any])
        #expect(first["type"] as? String == "invoke" && first["process"] is Int && first["time"] is Int && first["key"] is String)
        #expect(try String(contentsOfFile: report + "/faults.txt", encoding: .utf8).contains("kill member"))
        #expect(!FileManager.default.fileExists(atPath: report + "/cluster"), "the scratch cluster is removed")
    }

    /// A suite runs its scenarios and prints one row each: runs, passed, worst unavailability, operations checked.
    @Test func aSuitePrintsItsTable() throws {
        let directory = NSTemporaryDirectory() + "crm-chaos-suite-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let repository = ProcessCluster.repository.path
        try "scenarios: [\(repository)/chaos/kill-follower.yaml]\n".write(toFile: directory + "/suite.yaml", atomically: true, encoding: .utf8)
        let run = try ProcessCluster.tool("crm-chaos", ["suite", directory + "/suite.yaml", "--runs", "1", "--report", directory + "/reports",
                                                         "--repository", repository])
        #expect(run.status == 0, "\(run.output)\n\(run.errors)")
        let row = try #require(run.output.split(separator: "\n").first { $0.hasPrefix("kill-follower") }, "\(run.output)")
        let cells = row.split(separator: " ", omittingEmptySubsequences: true)
        #expect(cells.count == 6 && cells[1] == "1" && cells[2] == "1", "\(row)")
        #expect((Int(cells.last!) ?? 0) > 100, "operations checked: \(row)")
        #expect(run.output.contains("SCENARIO") && run.output.contains("WORST UNAVAILABILITY"))
    }
}
}
