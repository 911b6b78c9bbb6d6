import CRMClient
import CRMProto
import Dispatch
import FaultFile
import Foundation
import GRPCCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The cluster a drill works on. Either a fresh one of real `crm-node` processes on loopback in
/// a scratch directory (certificates and keys from `cluster/make-certs.sh`, one config per
/// member, proxies between members when the scenario cuts links, a fault file per member when
/// it uses the test-only hook), stopped by pid when the drill ends; or an existing cluster named
/// by its `cluster.json` (as `make up` writes it), whose members are killed, paused and started
/// again by their pid files and configs, and left running afterwards.
final class DrillCluster: @unchecked Sendable {
    struct Member {
        var config: String
        var log: String
        var pidFile: String?
        var dataDirectory: String?
        var admin: Endpoint
        var front: Endpoint
        var client: Endpoint
        var faultFile: String?
    }

    let directory: String
    let ids: [UInt64]
    let binaries: URL
    let owned: Bool
    let tls: ClientTLSFiles
    let adminTLS: ClientTLSFiles
    let proxies: LinkProxies?
    private(set) var members: [UInt64: Member] = [:]
    private var processes: [UInt64: Process] = [:]
    private var pids: [UInt64: pid_t] = [:]
    private(set) var paused: Set<UInt64> = []
    private(set) var faults: [UInt64: InjectedFaults] = [:]
    private var admins: [UInt64: MemberConnection] = [:]

    var fronts: [Endpoint] { ids.map { members[$0]!.front } }

    /// The clusters of drills under way, so that an interrupted crm-chaos (SIGINT, SIGTERM)
    /// still stops or resumes every member it touched.
    private static let live = Mutex<[ObjectIdentifier: DrillCluster]>([:])
    private static let signalSources = Mutex<[any DispatchSourceSignal]>([])

    /// Installs the SIGINT/SIGTERM handlers once: stop every live drill's members, then exit 130.
    static func stopOnSignals() {
        signalSources.withLock { sources in
            guard sources.isEmpty else { return }
            for signalNumber in [SIGINT, SIGTERM] {
                signal(signalNumber, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
                source.setEventHandler {
                    for cluster in live.withLock({ Array($0.values) }) { cluster.stopAll(grace: 3) }
                    FileHandle.standardError.write(
                        Data("crm-chaos: interrupted; the drill's members were stopped\n".utf8))
                    exit(130)
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    func register() { Self.live.withLock { $0[ObjectIdentifier(self)] = self } }
    func unregister() { _ = Self.live.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) } }

    // MARK: A scratch cluster

    init(nodes: Int, directory: String, binaries: URL, repository: URL, proxied: Bool, faultHooks: Bool) async throws {
        self.directory = directory
        self.binaries = binaries
        owned = true
        ids = (1...UInt64(nodes)).map { $0 }
        tls = ClientTLSFiles(
            ca: directory + "/certs/ca.pem", certificate: directory + "/certs/client-chaos.pem",
            privateKey: directory + "/certs/client-chaos.key")
        adminTLS = ClientTLSFiles(
            ca: directory + "/certs/ca.pem", certificate: directory + "/certs/client-crmctl.pem",
            privateKey: directory + "/certs/client-crmctl.key")
        proxies = proxied ? LinkProxies() : nil
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw ChaosError(
                "\(directory) already exists (the remains of another drill?); give the drill a fresh --report directory"
            )
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run(
            "/bin/bash",
            [
                repository.appendingPathComponent("cluster/make-certs.sh").path, directory + "/certs",
                ids.map(String.init).joined(separator: ","), "crmctl", "chaos",
            ])
        var taken: Set<Int> = []
        var ports: [UInt64: Ports] = [:]
        for id in ids { ports[id] = try Ports(&taken) }
        // Through a proxy, member i reaches member j at ports of its own: (i, j) → (peer, client).
        var routes: [UInt64: [UInt64: (peer: Int, client: Int)]] = [:]
        for from in ids {
            for to in ids where to != from {
                guard let proxies else {
                    routes[from, default: [:]][to] = (ports[to]!.peer, ports[to]!.client); continue
                }
                let route = (peer: try Self.freePort(&taken), client: try Self.freePort(&taken))
                try await proxies.listen(port: route.peer, forwardingTo: ports[to]!.peer, from: from, to: to)
                try await proxies.listen(port: route.client, forwardingTo: ports[to]!.client, from: from, to: to)
                routes[from, default: [:]][to] = route
            }
        }
        for id in ids {
            let me = ports[id]!
            members[id] = Member(
                config: directory + "/node-\(id).yaml", log: directory + "/node-\(id).log", pidFile: nil,
                dataDirectory: directory + "/node-\(id)/data",
                admin: Endpoint(host: "127.0.0.1", port: me.admin), front: Endpoint(host: "127.0.0.1", port: me.front),
                client: Endpoint(host: "127.0.0.1", port: me.client),
                faultFile: faultHooks ? directory + "/node-\(id).faults.json" : nil)
            try writeConfig(id, ports: ports, routes: routes[id]!, join: false)
        }
    }

    private struct Ports {
        var peer, client, admin, health, front, frontHTTP: Int
        init(_ taken: inout Set<Int>) throws {
            peer = try DrillCluster.freePort(&taken)
            client = try DrillCluster.freePort(&taken)
            admin = try DrillCluster.freePort(&taken)
            health = try DrillCluster.freePort(&taken)
            front = try DrillCluster.freePort(&taken)
            frontHTTP = try DrillCluster.freePort(&taken)
        }
    }

    private var writtenPorts: [UInt64: Ports] = [:]
    private var writtenRoutes: [UInt64: [UInt64: (peer: Int, client: Int)]] = [:]

    private func writeConfig(
        _ id: UInt64, ports: [UInt64: Ports], routes: [UInt64: (peer: Int, client: Int)], join: Bool
    ) throws {
        writtenPorts = ports
        writtenRoutes[id] = routes
        let me = ports[id]!
        let members = ids.map { other -> String in
            let (peer, client) = other == id ? (me.peer, me.client) : routes[other]!
            return
                "  - {id: \(other), peer: \"127.0.0.1:\(peer)\", client: \"127.0.0.1:\(client)\", admin: \"127.0.0.1:\(ports[other]!.admin)\"}"
        }.joined(separator: "\n")
        try """
        id: \(id)
        data_dir: node-\(id)/data
        master_key_file: certs/master-\(id).key
        \(join ? "join: true" : "")
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

        """.write(toFile: self.members[id]!.config, atomically: true, encoding: .utf8)
    }

    /// Rewrites a scratch member's config to join the running cluster (after its data was moved aside).
    func rewriteToJoin(_ id: UInt64) throws {
        guard owned, let routes = writtenRoutes[id] else {
            throw ChaosError("only a scratch cluster's members can be rewritten")
        }
        try writeConfig(id, ports: writtenPorts, routes: routes, join: true)
    }

    // MARK: An existing cluster

    private struct ClusterFile: Decodable {
        struct Member: Decodable {
            var id: UInt64; var admin: String; var front: String?; var client: String; var config: String?
        }
        struct TLS: Decodable { var ca: String; var cert: String; var key: String }
        var members: [Member]
        var tls: TLS
    }

    init(clusterFile path: String, binaries: URL) throws {
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : base + "/" + file }
        let file: ClusterFile
        do {
            file = try JSONDecoder().decode(ClusterFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ChaosError(
                "\(path) is not a cluster file (members with id, admin, client, front, config; tls): \(error)")
        }
        directory = base
        self.binaries = binaries
        owned = false
        proxies = nil
        ids = file.members.map(\.id).sorted()
        tls = ClientTLSFiles(
            ca: resolve(file.tls.ca), certificate: resolve(file.tls.cert), privateKey: resolve(file.tls.key))
        adminTLS = tls
        for member in file.members {
            guard let admin = Endpoint(member.admin), let client = Endpoint(member.client),
                let front = member.front.flatMap(Endpoint.init)
            else {
                throw ChaosError("member \(member.id) in \(path) needs admin, client and front addresses (host:port)")
            }
            guard let config = member.config.map(resolve) else {
                throw ChaosError("member \(member.id) in \(path) names no config")
            }
            members[member.id] = Member(
                config: config, log: base + "/node-\(member.id).log", pidFile: base + "/node-\(member.id).pid",
                dataDirectory: nil, admin: admin, front: front, client: client, faultFile: nil)
            if let text = try? String(contentsOfFile: base + "/node-\(member.id).pid", encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                pids[member.id] = pid
            }
        }
        guard ids.count == 3 || ids.count == 5 else {
            throw ChaosError("\(path) lists \(ids.count) members; drills run on 3 or 5")
        }
        for id in ids where !isRunning(id) {
            throw ChaosError("member \(id) of \(path) is not running (no live pid in its pid file)")
        }
    }

    // MARK: Processes

    func logPath(_ id: UInt64) -> String { members[id]!.log }

    func start(_ id: UInt64) throws {
        let member = members[id]!
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("crm-node")
        process.arguments = ["--config", member.config]
        var environment = ProcessInfo.processInfo.environment
        if let faultFile = member.faultFile { environment["CRM_FAULT_FILE"] = faultFile }
        // A scratch cluster's members die with the drill, however it ends; an existing
        // cluster's members (with pid files) are left running.
        if member.pidFile == nil { environment["CRM_EXIT_WITH_PARENT"] = "\(getpid())" }
        process.environment = environment
        if !FileManager.default.fileExists(atPath: member.log) {
            _ = FileManager.default.createFile(atPath: member.log, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: member.log))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        processes[id] = process
        pids[id] = process.processIdentifier
        if let pidFile = member.pidFile {
            try "\(process.processIdentifier)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
        }
    }

    func isRunning(_ id: UInt64) -> Bool {
        if let process = processes[id] { return process.isRunning }
        guard let pid = pids[id] else { return false }
        return kill(pid, 0) == 0
    }

    func kill9(_ id: UInt64) {
        guard let pid = pids[id], isRunning(id) else { return }
        kill(pid, SIGKILL)
        if let process = processes[id] {
            process.waitUntilExit()
        } else {
            for _ in 0..<200 where kill(pid, 0) == 0 { Thread.sleep(forTimeInterval: 0.01) }
        }
        paused.remove(id)
        admins[id] = nil
    }

    func pause(_ id: UInt64) {
        guard let pid = pids[id], isRunning(id) else { return }
        kill(pid, SIGSTOP)
        paused.insert(id)
    }

    func resume(_ id: UInt64) {
        guard let pid = pids[id], paused.contains(id) else { return }
        kill(pid, SIGCONT)
        paused.remove(id)
    }

    /// A scratch cluster: every process it started is stopped (resumed first, so that SIGTERM
    /// is seen; SIGKILL after `grace`). An existing cluster: resumed, and left running.
    func stopAll(grace: Double = 10) {
        for id in paused { resume(id) }
        guard owned else { return }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while processes.values.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
    }

    // MARK: Injected faults (fault hook)

    /// Sets one field of a member's fault file (nil removes it); the member re-reads the file
    /// at its next health check.
    func setFault<Value>(_ id: UInt64, _ field: WritableKeyPath<InjectedFaults, Value?>, _ value: Value?) throws {
        guard let file = members[id]?.faultFile else {
            throw ChaosError(
                "member \(id) has no fault file (drills with disk, clock or planted faults need a scratch cluster)")
        }
        faults[id, default: InjectedFaults()][keyPath: field] = value
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(faults[id]!).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    /// Whether a member has logged that it took up its fault file (only debug builds read one).
    func tookFaults(_ id: UInt64) -> Bool {
        (try? String(contentsOfFile: logPath(id), encoding: .utf8))?.contains("injected faults changed") ?? false
    }

    // MARK: Admin

    func connection(_ id: UInt64) -> MemberConnection? {
        guard isRunning(id), !paused.contains(id), let endpoint = members[id]?.admin else { return nil }
        if admins[id] == nil {
            admins[id] = try? MemberConnection(host: endpoint.host, port: endpoint.port, tls: adminTLS)
        }
        return admins[id]
    }

    func status(_ id: UInt64, timeout: Duration = .seconds(1)) async -> Crm_V1_StatusResponse? {
        var options = CallOptions.defaults
        options.timeout = timeout
        return try? await connection(id)?.admin.status(Crm_V1_StatusRequest(), options: options)
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

    func dropConnection(_ id: UInt64) async {
        await admins.removeValue(forKey: id)?.close()
    }

    func closeConnections() async {
        for connection in admins.values { await connection.close() }
        admins = [:]
        await proxies?.shutdown()
    }

    // MARK: Helpers

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ChaosError("\(executable) \(arguments.joined(separator: " ")) failed")
        }
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
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if bound == 0 {
                taken.insert(port)
                return port
            }
        }
        throw ChaosError("no free port found on 127.0.0.1")
    }
}
