import ArgumentParser

@main
struct CRMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-bench",
        abstract: "Benchmarks for the CRM cluster node.",
        subcommands: [StorageBenchmark.self])
}
