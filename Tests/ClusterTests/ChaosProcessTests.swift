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
}
}
