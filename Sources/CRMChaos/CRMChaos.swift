import ArgumentParser
import Foundation
import Yams

/// crm-chaos: runs a chaos drill against real crm-node processes and judges it.
@main
struct CRMChaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-chaos",
        abstract: "Run chaos drills against real crm-node processes and judge them.",
        discussion: """
            Each drill starts a fresh cluster on 127.0.0.1 in a scratch directory (or, with --cluster, \
            works on a running one), runs a workload through the fronts, injects the scenario's \
            faults, heals, and judges: the history is linearizable (per key), no acknowledged write \
            is missing (unique writes, the CAS counter), availability returns within the bound, and \
            every member converges on one applied index and state hash. Exit status 0 when every \
            drill passed, 1 when one failed, 2 for bad usage.
            """,
        subcommands: [Run.self, Suite.self])

    /// Where the binaries and the repository are, checked once.
    struct Locations {
        var binaries: URL
        var repository: URL

        init(binaries: String?, repository: String?) throws {
            let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            self.binaries = binaries.map { URL(fileURLWithPath: $0) } ?? executable.deletingLastPathComponent()
            guard FileManager.default.isExecutableFile(atPath: self.binaries.appendingPathComponent("crm-node").path)
            else {
                throw ValidationError("no crm-node in \(self.binaries.path); build it, or pass --binaries")
            }
            self.repository = URL(fileURLWithPath: repository ?? FileManager.default.currentDirectoryPath)
            guard
                FileManager.default.fileExists(
                    atPath: self.repository.appendingPathComponent("cluster/make-certs.sh").path)
            else {
                throw ValidationError(
                    "\(self.repository.path) has no cluster/make-certs.sh: run crm-chaos from the repository root, or pass --repository"
                )
            }
        }
    }

    /// Writes one line to standard output at once (unbuffered), so that progress reaches a pipe
    /// or a CI log as it happens.
    static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    static func stamp() -> String {
        ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
    }

    struct Suite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run every scenario a suite file lists (`scenarios: [file, ...]`, paths relative to it) --runs times; print the table."
        )

        @Argument(help: "The suite file.") var suite: String
        @Option(help: "Runs of every scenario.") var runs = 1
        @Option(help: "Where to write the reports (default: run/chaos/suite-<time>).") var report: String?
        @Option(help: "Directory holding crm-node (default: next to crm-chaos).") var binaries: String?
        @Option(help: "The repository root (default: the current directory).") var repository: String?
        @Option(help: "Work on this running cluster (its cluster.json, as `make up` writes it) instead of fresh ones.")
        var cluster: String?

        struct File: Decodable { var scenarios: [String] }

        func run() async throws {
            guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1 to 100") }
            let locations = try Locations(binaries: binaries, repository: repository)
            let text = try String(contentsOfFile: suite, encoding: .utf8)
            let file = try YAMLDecoder().decode(File.self, from: text)
            let base = URL(fileURLWithPath: suite).deletingLastPathComponent()
            let scenarios = try file.scenarios.map {
                try Scenario.load($0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).path)
            }
            let directory = report ?? "run/chaos/suite-\(CRMChaos.stamp())"
            var rows: [[String]] = []
            var allPassed = true
            for scenario in scenarios {
                var passed = 0, operations = 0
                var worst = 0.0
                for run in 1...runs {
                    let verdict = try await Drill(
                        scenario: scenario, report: directory + "/\(scenario.name)-\(run)",
                        binaries: locations.binaries,
                        repository: locations.repository, clusterFile: cluster
                    ) { CRMChaos.say("crm-chaos: \(scenario.name) #\(run): \($0)") }.run()
                    for check in verdict.checks where !check.passed {
                        CRMChaos.say("FAIL \(scenario.name) #\(run) \(check.name): \(check.detail)")
                    }
                    if verdict.passed { passed += 1 }
                    operations += verdict.operationsChecked
                    worst = max(worst, verdict.worstUnavailabilitySeconds ?? .infinity)
                }
                allPassed = allPassed && passed == runs
                rows.append([scenario.name, "\(runs)", "\(passed)", String(format: "%.3f s", worst), "\(operations)"])
            }
            let header = ["SCENARIO", "RUNS", "PASSED", "WORST UNAVAILABILITY", "OPS CHECKED"]
            let widths = header.indices.map { column in ([header[column]] + rows.map { $0[column] }).map(\.count).max()!
            }
            for row in [header] + rows {
                CRMChaos.say(
                    row.enumerated().map {
                        $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0)
                    }.joined(separator: "  "))
            }
            CRMChaos.say("reports in \(directory)")
            if !allPassed { throw ExitCode(1) }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one scenario file (chaos/*.yaml) and print its verdict.")

        @Argument(help: "The scenario file.") var scenario: String
        @Option(help: "Where to write the report (default: run/chaos/<scenario>-<time>).") var report: String?
        @Option(help: "Directory holding crm-node (default: next to crm-chaos).") var binaries: String?
        @Option(help: "The repository root, for cluster/make-certs.sh (default: the current directory).")
        var repository: String?
        @Option(help: "Work on this running cluster (its cluster.json, as `make up` writes it) instead of a fresh one.")
        var cluster: String?

        func run() async throws {
            let drill = try Scenario.load(scenario)
            let directory = report ?? "run/chaos/\(drill.name)-\(CRMChaos.stamp())"
            let locations = try Locations(binaries: binaries, repository: repository)
            let started = Date()
            let verdict = try await Drill(
                scenario: drill, report: directory, binaries: locations.binaries, repository: locations.repository,
                clusterFile: cluster
            ) { line in
                CRMChaos.say("crm-chaos: \(line)")
            }.run()
            for check in verdict.checks {
                CRMChaos.say("\(check.passed ? "PASS" : "FAIL") \(check.name): \(check.detail)")
            }
            CRMChaos.say(
                String(
                    format: "%@ %@ in %.1f s; report in %@", verdict.passed ? "PASSED" : "FAILED", drill.name,
                    Date().timeIntervalSince(started), directory))
            if !verdict.passed { throw ExitCode(1) }
        }
    }
}
