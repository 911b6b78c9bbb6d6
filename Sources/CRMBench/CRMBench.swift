import ArgumentParser

@main
struct CRMBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-bench",
        abstract: "Benchmarks for the CRM cluster node.",
        subcommands: [
            KVBenchmark.self, CRMBenchmark.self, PeerBenchmark.self, StorageBenchmark.self, RaceBenchmark.self,
            CatchUpBenchmark.self, AuthBenchmark.self, BackupBenchmark.self,
        ])
}
