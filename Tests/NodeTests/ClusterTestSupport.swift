import CRMTestSupport
import ClusterHarness
import Foundation
import KVStore
import Logging
import NIOPosix
import Raft

@testable import Node

/// Certificates, keys and configs for a local cluster of in-process members, made by the shared
/// harness (the real scripts and config writer); the members run in this process, without fronts.
final class LocalClusterFiles: @unchecked Sendable {
    let cluster: ProcessCluster

    init(ids: [NodeID], tickMilliseconds: Int = 20) throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        cluster = try ProcessCluster(
            ids: ids, directory: NSTemporaryDirectory() + "crm-cluster-" + UUID().uuidString,
            binaries: repository.appendingPathComponent(".build/debug"), repository: repository, clients: [],
            removesDirectory: true)
        try cluster.writeConfigs { config in
            config.front = nil
            config.timing = NodeConfig.Timing(
                tickMilliseconds: tickMilliseconds, electionTicks: 10, heartbeatTicks: 1,
                requestTimeoutMilliseconds: 3000)
            config.limits = NodeConfig.Limits(snapshotEveryEntries: 200)
        }
    }

    func startNode(_ id: NodeID, logger given: Logger? = nil) async throws -> NodeRuntime {
        var logger = Logger(label: "test.node")
        logger.logLevel = ProcessInfo.processInfo.environment["CRM_TEST_LOG"] == nil ? .critical : .debug
        if let given { logger = given }
        let runtime = NodeRuntime(
            config: try NodeConfig.load(path: cluster.configPath(id)), logger: logger, eventLoopThreads: 1)
        try await runtime.start()
        return runtime
    }
}

/// Polls every 10 ms for at most `seconds`.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

func leader(of nodes: [NodeID: NodeRuntime]) -> NodeRuntime? {
    nodes.values.first { $0.engine?.currentStatus.role == .leader }
}
