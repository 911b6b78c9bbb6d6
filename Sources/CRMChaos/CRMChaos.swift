import ArgumentParser
import Foundation

/// crm-chaos: runs a chaos drill against real crm-node processes and judges it.
@main
struct CRMChaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-chaos",
        abstract: "Run chaos drills against real crm-node processes and judge them.",
        discussion: """
        Each drill starts a fresh cluster on 127.0.0.1 in a scratch directory, runs a workload \
        through the fronts, injects the scenario's faults, heals, and judges: the history is \
        linearizable (per key), every key reads back, availability returns within the bound, and \
        every member converges on one applied index and state hash. Exit status 0 when every \
        drill passed, 1 when one failed, 2 for bad usage.
        """,
        subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run one scenario file (chaos/*.yaml) and print its verdict.")

        @Argument(help: "The scenario file.") var scenario: String
        @Option(help: "Where to write the report (default: run/chaos/<scenario>-<time>).") var report: String?
        @Option(help: "Directory holding crm-node (default: next to crm-chaos).") var binaries: String?
        @Option(help: "The repository root, for cluster/make-certs.sh (default: the current directory).") var repository: String?

        func run() async throws {
            let drill = try Scenario.load(scenario)
            let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
            let directory = report ?? "run/chaos/\(drill.name)-\(stamp)"
            let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            let binaryDirectory = binaries.map { URL(fileURLWithPath: $0) } ?? executable.deletingLastPathComponent()
            guard FileManager.default.isExecutableFile(atPath: binaryDirectory.appendingPathComponent("crm-node").path) else {
                throw ValidationError("no crm-node in \(binaryDirectory.path); build it, or pass --binaries")
            }
            let root = URL(fileURLWithPath: repository ?? FileManager.default.currentDirectoryPath)
            guard FileManager.default.fileExists(atPath: root.appendingPathComponent("cluster/make-certs.sh").path) else {
                throw ValidationError("\(root.path) has no cluster/make-certs.sh: run crm-chaos from the repository root, or pass --repository")
            }
            let started = Date()
            let verdict = try await Drill(scenario: drill, report: directory, binaries: binaryDirectory, repository: root) { line in
                print("crm-chaos: \(line)")
            }.run()
            for check in verdict.checks { print("\(check.passed ? "PASS" : "FAIL") \(check.name): \(check.detail)") }
            print(String(format: "%@ %@ in %.1f s; report in %@", verdict.passed ? "PASSED" : "FAILED", drill.name,
                         Date().timeIntervalSince(started), directory))
            if !verdict.passed { throw ExitCode(1) }
        }
    }
}
