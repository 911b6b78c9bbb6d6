import CRMClient
import CRMProto
import Foundation
import GRPCCore
#if canImport(Glibc)
import Glibc
#endif

/// A fresh cluster of real `crm-node` processes on loopback in a scratch directory: certificates
/// and keys from `cluster/make-certs.sh`, one config per member (front included), logs next to
/// them. Every process it started is stopped by its pid when the drill ends.
final class ScratchCluster: @unchecked Sendable {
    struct Ports { var peer, client, admin, health, front, frontHTTP: Int }

    let directory: String
    let ids: [UInt64]
    let binaries: URL
    private(set) var ports: [UInt64: Ports] = [:]
    private(set) var processes: [UInt64: Process] = [:]
    private(set) var paused: Set<UInt64> = []
    private var admins: [UInt64: MemberConnection] = [:]

    init(nodes: Int, directory: String, binaries: URL, repository: URL) throws {
        self.directory = directory
        self.binaries = binaries
        ids = (1...UInt64(nodes)).map { $0 }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run("/bin/bash", [repository.appendingPathComponent("cluster/make-certs.sh").path, directory + "/certs",
                                   ids.map(String.init).joined(separator: ","), "crmctl", "chaos"])
        var taken: Set<Int> = []
        for id in ids {
            ports[id] = Ports(peer: try Self.freePort(&taken), client: try Self.freePort(&taken), admin: try Self.freePort(&taken),
                              health: try Self.freePort(&taken), front: try Self.freePort(&taken), frontHTTP: try Self.freePort(&taken))
        }
        for id in ids { try writeConfig(id) }
    }

    var tls: ClientTLSFiles {
        ClientTLSFiles(ca: directory + "/certs/ca.pem", certificate: directory + "/certs/client-chaos.pem",
                       privateKey: directory + "/certs/client-chaos.key")
    }

    var adminTLS: ClientTLSFiles {
        ClientTLSFiles(ca: directory + "/certs/ca.pem", certificate: directory + "/certs/client-crmctl.pem",
                       privateKey: directory + "/certs/client-crmctl.key")
    }

    func logPath(_ id: UInt64) -> String { directory + "/node-\(id).log" }

    private func writeConfig(_ id: UInt64) throws {
        let me = ports[id]!
        let members = ids.map { other -> String in
            let p = ports[other]!
            return "  - {id: \(other), peer: \"127.0.0.1:\(p.peer)\", client: \"127.0.0.1:\(p.client)\", admin: \"127.0.0.1:\(p.admin)\"}"
        }.joined(separator: "\n")
        try """
            id: \(id)
            data_dir: node-\(id)/data
            master_key_file: certs/master-\(id).key
            listen:
              peer: "127.0.0.1:\(me.peer)"
              client: "127.0.0.1:\(me.client)"
              admin: "127.0.0.1:\(me.admin)"
              health: "127.0.0.1:\(me.health)"
            members:
            \(members)
            tls:
              ca: certs/ca.pem
              cert: certs/member-\(id).pem
              key: certs/member-\(id).key
            admins: [crmctl]
            front:
              grpc: "127.0.0.1:\(me.front)"
              http: "127.0.0.1:\(me.frontHTTP)"
              requests_per_second: 100000
              burst: 100000

            """.write(toFile: directory + "/node-\(id).yaml", atomically: true, encoding: .utf8)
    }

    // MARK: Processes

    func start(_ id: UInt64) throws {
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("crm-node")
        process.arguments = ["--config", directory + "/node-\(id).yaml"]
        if !FileManager.default.fileExists(atPath: logPath(id)) { FileManager.default.createFile(atPath: logPath(id), contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath(id)))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        processes[id] = process
    }

    func isRunning(_ id: UInt64) -> Bool { processes[id]?.isRunning ?? false }

    func kill9(_ id: UInt64) {
        guard let process = processes[id], process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        paused.remove(id)
        admins[id] = nil
    }

    func pause(_ id: UInt64) {
        guard let process = processes[id], process.isRunning else { return }
        kill(process.processIdentifier, SIGSTOP)
        paused.insert(id)
    }

    func resume(_ id: UInt64) {
        guard let process = processes[id], paused.contains(id) else { return }
        kill(process.processIdentifier, SIGCONT)
        paused.remove(id)
    }

    /// Stops every process it started (resumed first, so that SIGTERM is seen), then SIGKILL
    /// for any still running after `grace`.
    func stopAll(grace: Double = 10) {
        for id in paused { resume(id) }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while processes.values.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
    }

    // MARK: Admin

    func status(_ id: UInt64, timeout: Duration = .seconds(1)) async -> Crm_V1_StatusResponse? {
        guard isRunning(id), !paused.contains(id), let port = ports[id]?.admin else { return nil }
        if admins[id] == nil { admins[id] = try? MemberConnection(host: "127.0.0.1", port: port, tls: adminTLS) }
        var options = CallOptions.defaults
        options.timeout = timeout
        return try? await admins[id]?.admin.status(Crm_V1_StatusRequest(), options: options)
    }

    /// The leader the running, unpaused members agree on (0: none yet).
    func leader() async -> UInt64 {
        var named: Set<UInt64> = []
        for id in ids where isRunning(id) && !paused.contains(id) {
            guard let status = await status(id) else { continue }
            if status.role == .leader { return id }
            named.insert(status.leaderID)
        }
        return named.count == 1 ? named.first! : 0
    }

    func closeConnections() async {
        for connection in admins.values { await connection.close() }
        admins = [:]
    }

    // MARK: Helpers

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ChaosError("\(executable) \(arguments.joined(separator: " ")) failed") }
    }

    /// A loopback port that binds now, below the kernel's ephemeral range (so that no outgoing
    /// connection can take it before its member binds it).
    static func freePort(_ taken: inout Set<Int>) throws -> Int {
        for _ in 0..<1000 {
            let port = Int.random(in: 20_000..<32_000)
            guard !taken.contains(port) else { continue }
            let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard socket >= 0 else { continue }
            defer { close(socket) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if bound == 0 {
                taken.insert(port)
                return port
            }
        }
        throw ChaosError("no free port found on 127.0.0.1")
    }
}
