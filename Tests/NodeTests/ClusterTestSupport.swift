import CRMTestSupport
import Foundation
import KVStore
import Logging
import NIOPosix
import Raft

@testable import Node

/// Certificates, keys and configs for a local cluster, made by the real scripts.
final class LocalClusterFiles: @unchecked Sendable {
    let directory = NSTemporaryDirectory() + "crm-cluster-" + UUID().uuidString
    let ids: [NodeID]
    var members: [MemberEndpoints] = []
    var healthPorts: [NodeID: Int] = [:]

    init(ids: [NodeID], tickMilliseconds: Int = 20) throws {
        self.ids = ids
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("cluster/make-certs.sh").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, directory + "/certs", ids.map(String.init).joined(separator: ","), "crmctl"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "make-certs.sh failed")
        for id in ids {
            members.append(
                MemberEndpoints(
                    id: id, peer: Endpoint(host: "127.0.0.1", port: try TestSockets.freePort()),
                    client: Endpoint(host: "127.0.0.1", port: try TestSockets.freePort()),
                    admin: Endpoint(host: "127.0.0.1", port: try TestSockets.freePort())))
            healthPorts[id] = try TestSockets.freePort()
        }
        for id in ids { try writeConfig(id, tickMilliseconds: tickMilliseconds) }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func configPath(_ id: NodeID) -> String { directory + "/node-\(id).yaml" }

    private func writeConfig(_ id: NodeID, tickMilliseconds: Int) throws {
        let me = members.first { $0.id == id }!
        let list = members.map {
            "  - {id: \($0.id), peer: \"\($0.peer)\", client: \"\($0.client)\", admin: \"\($0.admin)\"}"
        }
        let yaml = """
            id: \(id)
            data_dir: node-\(id)/data
            master_key_file: certs/master-\(id).key
            listen:
              peer: "\(me.peer)"
              client: "\(me.client)"
              admin: "\(me.admin)"
              health: "127.0.0.1:\(healthPorts[id]!)"
            members:
            \(list.joined(separator: "\n"))
            tls:
              ca: certs/ca.pem
              cert: certs/member-\(id).pem
              key: certs/member-\(id).key
            timing:
              tick_ms: \(tickMilliseconds)
              election_ticks: 10
              heartbeat_ticks: 1
              request_timeout_ms: 3000
            limits:
              snapshot_every_entries: 200
            """
        try yaml.write(toFile: configPath(id), atomically: true, encoding: .utf8)
    }

    func startNode(_ id: NodeID) async throws -> NodeRuntime {
        var logger = Logger(label: "test.node")
        logger.logLevel = ProcessInfo.processInfo.environment["CRM_TEST_LOG"] == nil ? .critical : .debug
        let runtime = NodeRuntime(
            config: try NodeConfig.load(path: configPath(id)), logger: logger, eventLoopThreads: 1)
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
