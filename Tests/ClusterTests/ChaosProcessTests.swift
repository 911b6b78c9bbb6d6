import ClusterHarness
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// crm-chaos itself, on real processes. (The short suite, every fault kind once, runs from
/// `make test` right after these: `crm-chaos suite chaos/short-suite.yaml`.)
extension RealProcessTests {
    @Suite struct ChaosProcessTests {
        static func verdictLines(_ output: String) -> String {
            output.split(separator: "\n").filter { $0.hasPrefix("PASS") || $0.hasPrefix("FAIL") }.joined(
                separator: "\n")
        }

        static func drill(
            _ scenario: String, _ extra: [String] = []
        ) throws -> (status: Int32, output: String, errors: String, report: String) {
            let report = NSTemporaryDirectory() + "crm-chaos-" + UUID().uuidString
            let repository = ProcessCluster.repository.path
            let run = try ProcessCluster.tool(
                "crm-chaos",
                ["run", repository + "/chaos/" + scenario, "--report", report, "--repository", repository] + extra)
            print(verdictLines(run.output))
            return (run.status, run.output, run.errors, report)
        }

        /// The kill-leader drill passes and leaves its report: history, faults, throughput, logs, summary.
        @Test func theKillLeaderDrillPassesAndWritesItsReport() throws {
            let run = try Self.drill("kill-leader.yaml")
            defer { try? FileManager.default.removeItem(atPath: run.report) }
            #expect(run.status == 0, "\(run.output)\n\(run.errors)")
            #expect(run.output.contains("PASSED kill-leader"))
            for check in ["available", "final reads", "no lost writes", "counter", "linearizable", "members converged"]
            {
                #expect(run.output.contains("PASS \(check)"), "\(check) missing from the verdict")
            }
            for file in [
                "history.jsonl", "faults.txt", "throughput.csv", "summary.json", "node-1.log", "node-2.log",
                "node-3.log",
            ] {
                #expect(
                    FileManager.default.fileExists(atPath: run.report + "/" + file), "\(file) missing from the report")
            }
            let history = try String(contentsOfFile: run.report + "/history.jsonl", encoding: .utf8).split(
                separator: "\n")
            #expect(history.count > 200, "the workload recorded \(history.count) events")
            let first = try #require(try JSONSerialization.jsonObject(with: Data(history[0].utf8)) as? [String: Any])
            #expect(
                first["type"] as? String == "invoke" && first["process"] is Int && first["time"] is Int
                    && first["key"] is String)
            #expect(
                history.contains { $0.contains("\"key\":\"counter\"") }
                    && history.contains { $0.contains("\"key\":\"u\\/") },
                "the history holds counter increments and unique writes")
            #expect(try String(contentsOfFile: run.report + "/faults.txt", encoding: .utf8).contains("kill "))
            #expect(!FileManager.default.fileExists(atPath: run.report + "/cluster"), "the scratch cluster is removed")
        }

        /// Planted bug: reads served without a ReadIndex. The drill must fail on linearizability and
        /// name a read that returned a replaced value.
        @Test func aDrillCatchesStaleReadsFromACutOffLeader() throws {
            let run = try Self.drill("planted/stale-reads.yaml")
            defer { try? FileManager.default.removeItem(atPath: run.report) }
            #expect(run.status == 1, "the drill must fail: \(run.output)\n\(run.errors)")
            #expect(run.output.contains("planted bug stale_reads switched on"), "\(run.output)")
            #expect(
                run.output.contains("FAIL linearizable: key ") && run.output.contains("had been acknowledged at"),
                "\(Self.verdictLines(run.output))")
            #expect(run.output.contains("FAILED planted-stale-reads"))
        }

        /// Planted bug: puts acknowledged before they commit. Killing the leader must make the drill
        /// fail: an acknowledged write is missing from what is read afterwards.
        @Test func aDrillCatchesWritesAcknowledgedBeforeTheyCommit() throws {
            let run = try Self.drill("planted/ack-before-commit.yaml")
            defer { try? FileManager.default.removeItem(atPath: run.report) }
            #expect(run.status == 1, "the drill must fail: \(run.output)\n\(run.errors)")
            let failed = run.output.split(separator: "\n").filter { $0.hasPrefix("FAIL ") }
            #expect(
                failed.contains {
                    $0.hasPrefix("FAIL linearizable") || $0.hasPrefix("FAIL no lost writes")
                        || $0.hasPrefix("FAIL counter")
                },
                "\(Self.verdictLines(run.output))")
            #expect(run.output.contains("FAILED planted-ack-before-commit"))
        }

        /// A drill on a running cluster named by its cluster.json: faults by pid file, the killed
        /// member started again from its config, the cluster left running afterwards.
        @Test func aDrillRunsAgainstAnExistingCluster() async throws {
            let cluster = try ProcessCluster {
                $0.front?.requestsPerSecond = 100_000
                $0.front?.burst = 100_000
            }
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let file = try cluster.writeClusterFile()
            defer {
                // The member crm-chaos restarted is not the test's child: stop it by its pid file.
                for id in cluster.ids {
                    if let text = try? String(contentsOfFile: cluster.directory + "/node-\(id).pid", encoding: .utf8),
                        let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
                    {
                        kill(pid, SIGKILL)
                    }
                }
            }
            let run = try Self.drill("kill-follower.yaml", ["--cluster", file])
            defer { try? FileManager.default.removeItem(atPath: run.report) }
            #expect(run.status == 0, "\(run.output)\n\(run.errors)")
            #expect(run.output.contains("PASS members converged: all 3 members"), "\(Self.verdictLines(run.output))")
            #expect(
                FileManager.default.fileExists(atPath: cluster.directory + "/node-1.yaml"),
                "the cluster's own files stay")
            let status = try ProcessCluster.tool("crmctl", ["status", "--cluster", file, "--json"])
            #expect(
                status.status == 0 && status.output.contains("\"leader_id\""),
                "the cluster still runs after the drill: \(status.errors)")
            let refused = try Self.drill("partition-leader.yaml", ["--cluster", file])
            #expect(
                refused.status != 0 && refused.errors.contains("only a fresh scratch cluster has"),
                "\(refused.output) \(refused.errors)")
        }

        /// A suite runs its scenarios and prints one row each: runs, passed, worst unavailability, operations checked.
        @Test func aSuitePrintsItsTable() throws {
            let directory = NSTemporaryDirectory() + "crm-chaos-suite-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let repository = ProcessCluster.repository.path
            try "scenarios: [\(repository)/chaos/kill-follower.yaml]\n".write(
                toFile: directory + "/suite.yaml", atomically: true, encoding: .utf8)
            let run = try ProcessCluster.tool(
                "crm-chaos",
                [
                    "suite", directory + "/suite.yaml", "--runs", "1", "--report", directory + "/reports",
                    "--repository", repository,
                ])
            #expect(run.status == 0, "\(run.output)\n\(run.errors)")
            let row = try #require(
                run.output.split(separator: "\n").first { $0.hasPrefix("kill-follower") }, "\(run.output)")
            let cells = row.split(separator: " ", omittingEmptySubsequences: true)
            #expect(cells.count == 6 && cells[1] == "1" && cells[2] == "1", "\(row)")
            #expect((Int(cells.last!) ?? 0) > 100, "operations checked: \(row)")
            #expect(run.output.contains("SCENARIO") && run.output.contains("WORST UNAVAILABILITY"))
        }
    }
}
