import CRMClient
import CRMProto
import Dispatch
import FaultFile
import Foundation
import GRPCCore
import Node
import Raft
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where one member listens.
public struct MemberAddresses: Sendable, Equatable {
    public var peer: Endpoint
    public var client: Endpoint
    public var admin: Endpoint
    public var health: Endpoint
    public var front: Endpoint
    public var frontHTTP: Endpoint

    /// Six fresh ports on 127.0.0.1.
    public static func loopback() throws -> MemberAddresses {
        func next() throws -> Endpoint { Endpoint(host: "127.0.0.1", port: try LoopbackPorts.reserve()) }
        return MemberAddresses(
            peer: try next(), client: try next(), admin: try next(), health: try next(), front: try next(),
            frontHTTP: try next())
    }

    /// How the other members reach member `id`.
    public func endpoints(_ id: NodeID) -> MemberEndpoints {
        MemberEndpoints(id: id, peer: peer, client: client, admin: admin)
    }
}

/// A cluster of real `crm-node` processes, the one harness of the cluster tests, the node tests
/// and `crm-chaos`. Either a scratch cluster in a fresh directory (certificates and keys from
/// `cluster/make-certs.sh`, member configs written by `memberConfig`, a fault file per member),
/// whose processes are killed by pid when it is released; or an existing cluster adopted from
/// its `cluster.json` (as `make up` writes it), whose members are killed, paused and started
/// again by their pid files and configs, and left running.
public final class ProcessCluster: @unchecked Sendable {
    public struct Member: Sendable {
        public var addresses: MemberAddresses
        public var config: String
        public var log: String
        /// Adopted members: where their pid is kept (and rewritten when they are restarted).
        public var pidFile: String?
        /// Where the member reads its injected faults (the debug build's fault hook); scratch only.
        public var faultFile: String?
    }

    public enum API: Sendable { case admin, client, front }

    public let directory: String
    /// The founding voters.
    public let ids: [NodeID]
    /// Members with certificates and a `join: true` config, neither started nor founders.
    public let spares: [NodeID]
    public let binaries: URL
    /// A scratch cluster (its processes stop with it) rather than an adopted one.
    public let owned: Bool
    public private(set) var members: [NodeID: Member] = [:]
    public private(set) var paused: Set<NodeID> = []
    public private(set) var faults: [NodeID: InjectedFaults] = [:]
    /// The client certificate names `make-certs.sh` made (`crmctl`, the operator, first).
    public let clients: [String]
    /// Remove the directory when the cluster is released (tests; drills keep their reports).
    public var removesDirectory: Bool
    private var processes: [NodeID: Process] = [:]
    private var pids: [NodeID: pid_t] = [:]
    /// Cached connections, shared by a test's concurrent tasks.
    private let connections = Mutex<[String: MemberConnection]>([:])
    /// The session tokens client and front connections carry, by client name (`signInRecordsUser`).
    public let bearerTokens = Mutex<[String: String]>([:])
    private var configure: (inout NodeConfig) -> Void = { _ in }
    private var routes: [NodeID: [NodeID: MemberAddresses]] = [:]
    /// An adopted cluster's certificates: the operator's and the application's (from its file).
    private let adoptedTLS: (operator: ClientTLSFiles, application: ClientTLSFiles)?

    // MARK: A scratch cluster

    /// Makes the directory, certificates for `ids + spares` and `clients`, and the members'
    /// addresses; `writeConfigs` then writes their configs.
    public init(
        ids: [NodeID], spares: [NodeID] = [], directory: String, binaries: URL, repository: URL,
        clients: [String] = ["app"], removesDirectory: Bool
    ) throws {
        precondition(!ids.isEmpty && Set(ids).isDisjoint(with: spares), "founders and spares must be distinct")
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw HarnessError("\(directory) already exists (the remains of another run?); use a fresh directory")
        }
        self.directory = directory
        self.ids = ids
        self.spares = spares
        self.binaries = binaries
        self.clients = ["crmctl"] + clients.filter { $0 != "crmctl" }
        self.removesDirectory = removesDirectory
        owned = true
        adoptedTLS = nil
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Programs.run(
            "/bin/bash",
            [
                repository.appendingPathComponent("cluster/make-certs.sh").path, directory + "/certs",
                (ids + spares).map(String.init).joined(separator: ","),
            ] + self.clients)
        for id in ids + spares {
            members[id] = Member(
                addresses: try .loopback(), config: directory + "/node-\(id).yaml", log: directory + "/node-\(id).log",
                pidFile: nil, faultFile: directory + "/node-\(id).faults.json")
        }
    }

    /// The one place a member's config is made: listeners on its addresses, every founder (and a
    /// joining member itself) reached at its addresses, or through `routes` (a drill's proxies),
    /// certificates and keys from `make-certs.sh`, and `crmctl` as the admin. Users sign in with
    /// a password alone (`crm.mfa: optional`: tests sign the same user in many times, and a TOTP
    /// code works once per 30 s); tests of the second factor set `mfa = .required`.
    public func memberConfig(
        _ id: NodeID, join: Bool = false, routes: [NodeID: MemberAddresses] = [:]
    ) -> NodeConfig {
        let me = members[id]!.addresses
        let listed = ids.contains(id) ? ids : ids + [id]
        return NodeConfig(
            id: id, dataDir: "node-\(id)/data", masterKeyFile: "certs/master-\(id).key",
            listen: NodeConfig.Listen(peer: me.peer, client: me.client, admin: me.admin, health: me.health),
            members: listed.map { other in
                (other == id ? me : routes[other] ?? members[other]!.addresses).endpoints(other)
            },
            tls: NodeConfig.TLS(ca: "certs/ca.pem", cert: "certs/member-\(id).pem", key: "certs/member-\(id).key"),
            join: join ? true : nil, admins: ["crmctl"],
            front: NodeConfig.Front(grpc: me.front, http: me.frontHTTP),
            crm: NodeConfig.CRM(keyFile: "certs/crm.key", mfa: .optional))
    }

    /// Writes every founder's config and every spare's (`join: true`), each changed by
    /// `configure`; `routes[id]` says where member `id` reaches the others.
    public func writeConfigs(
        routes: [NodeID: [NodeID: MemberAddresses]] = [:], configure: @escaping (inout NodeConfig) -> Void = { _ in }
    ) throws {
        precondition(owned, "an adopted cluster's configs are its operator's")
        self.routes = routes
        self.configure = configure
        for id in ids { try writeConfig(id, join: false) }
        for id in spares { try writeConfig(id, join: true) }
    }

    /// Rewrites a member's config to join the running cluster (after its data was moved aside).
    public func rewriteToJoin(_ id: NodeID) throws {
        guard owned else { throw HarnessError("only a scratch cluster's members can be rewritten") }
        try writeConfig(id, join: true)
    }

    private func writeConfig(_ id: NodeID, join: Bool) throws {
        var config = memberConfig(id, join: join, routes: routes[id] ?? [:])
        configure(&config)
        try config.yaml().write(toFile: members[id]!.config, atomically: true, encoding: .utf8)
    }

    // MARK: An existing cluster

    /// Adopts the running cluster that `clusterFile` describes; it is left running.
    public init(adopting clusterFile: String, binaries: URL) throws {
        let file = try ClusterFile.load(path: clusterFile)
        directory = URL(fileURLWithPath: clusterFile).deletingLastPathComponent().path
        self.binaries = binaries
        owned = false
        removesDirectory = false
        clients = []
        spares = []
        ids = file.members.map(\.id).sorted()
        adoptedTLS = (
            ClusterFile.files(file.tls, relativeTo: clusterFile),
            ClusterFile.files(file.clientTLS ?? file.tls, relativeTo: clusterFile)
        )
        for entry in file.members {
            guard let peer = Endpoint(entry.peer), let client = Endpoint(entry.client),
                let admin = Endpoint(entry.admin), let front = entry.front.flatMap(Endpoint.init)
            else {
                throw HarnessError(
                    "member \(entry.id) in \(clusterFile) needs peer, client, admin and front addresses (host:port)")
            }
            guard let config = entry.config.map({ ClusterFile.resolve($0, relativeTo: clusterFile) }) else {
                throw HarnessError("member \(entry.id) in \(clusterFile) names no config")
            }
            let health = entry.health.flatMap(Endpoint.init) ?? admin
            let frontHTTP = entry.frontHTTP.flatMap(Endpoint.init) ?? front
            let pidFile = directory + "/node-\(entry.id).pid"
            members[entry.id] = Member(
                addresses: MemberAddresses(
                    peer: peer, client: client, admin: admin, health: health, front: front, frontHTTP: frontHTTP),
                config: config, log: directory + "/node-\(entry.id).log", pidFile: pidFile, faultFile: nil)
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                pids[entry.id] = pid
            }
        }
    }

    deinit {
        if owned {
            for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for process in processes.values { process.waitUntilExit() }
        }
        if removesDirectory && ProcessInfo.processInfo.environment["CRM_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: Files

    public func addresses(_ id: NodeID) -> MemberAddresses { members[id]!.addresses }
    public func configPath(_ id: NodeID) -> String { members[id]!.config }
    public func logPath(_ id: NodeID) -> String { members[id]!.log }
    public func log(_ id: NodeID) -> String { (try? String(contentsOfFile: logPath(id), encoding: .utf8)) ?? "" }
    public func dataDirectory(_ id: NodeID) -> String { directory + "/node-\(id)/data" }

    /// The certificate files of client `name` (made by `make-certs.sh`). An adopted cluster has
    /// its operator's (`crmctl`) and one application's (any other name).
    public func tls(_ name: String = "crmctl") -> ClientTLSFiles {
        if let adoptedTLS { return name == "crmctl" ? adoptedTLS.operator : adoptedTLS.application }
        let certs = directory + "/certs"
        return ClientTLSFiles(
            ca: certs + "/ca.pem", certificate: certs + "/client-\(name).pem", privateKey: certs + "/client-\(name).key"
        )
    }

    /// The cluster file crmctl, crm-bench and `crm-chaos --cluster` read, as `make up` writes it,
    /// and the pid files beside it.
    public func writeClusterFile() throws -> String {
        let entries = ids.map { id -> ClusterFile.Member in
            let address = addresses(id)
            return ClusterFile.Member(
                id: id, peer: "\(address.peer)", client: "\(address.client)", admin: "\(address.admin)",
                health: "\(address.health)", front: "\(address.front)", frontHTTP: "\(address.frontHTTP)",
                pid: pids[id], config: URL(fileURLWithPath: configPath(id)).lastPathComponent)
        }
        for id in ids where isRunning(id) {
            try "\(pids[id]!)\n".write(toFile: directory + "/node-\(id).pid", atomically: true, encoding: .utf8)
        }
        func relative(_ name: String) -> ClusterFile.TLS {
            ClusterFile.TLS(ca: "certs/ca.pem", cert: "certs/client-\(name).pem", key: "certs/client-\(name).key")
        }
        let path = directory + "/cluster.json"
        try ClusterFile(
            members: entries, tls: relative("crmctl"), clientTLS: clients.count > 1 ? relative(clients[1]) : nil
        )
        .write(to: path)
        return path
    }

    // MARK: Processes

    /// Starts (or restarts) member `id`; its output is appended to its log.
    public func start(_ id: NodeID) throws {
        let member = members[id]!
        let process = Process()
        process.executableURL = binaries.appendingPathComponent("crm-node")
        process.arguments = ["--config", member.config]
        var environment = ProcessInfo.processInfo.environment
        if let faultFile = member.faultFile { environment["CRM_FAULT_FILE"] = faultFile }
        // A scratch cluster's members die with this process, however it ends; an adopted
        // cluster's members are left running.
        if owned { environment["CRM_EXIT_WITH_PARENT"] = "\(getpid())" }
        // Work scheduled on a stopped event loop is a crash, not a line in the log, so that
        // every test and drill catches a part that outlives its loops.
        if owned { environment["SWIFTNIO_STRICT"] = "1" }
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

    public func startAll() throws { for id in ids { try start(id) } }

    public func pid(_ id: NodeID) -> pid_t? { pids[id] }

    /// Waits for a process this harness started to end: its exit status (nil if it started none).
    public func waitUntilExit(_ id: NodeID) -> Int32? {
        guard let process = processes[id] else { return nil }
        process.waitUntilExit()
        return process.terminationStatus
    }

    public func isRunning(_ id: NodeID) -> Bool {
        if let process = processes[id] { return process.isRunning }
        guard let pid = pids[id] else { return false }
        return kill(pid, 0) == 0
    }

    /// SIGKILL, then waits (at most 2 s for a process this harness did not start) until it is gone.
    public func kill9(_ id: NodeID) { stop(id, signal: SIGKILL) }

    /// SIGTERM (a graceful stop), then waits until it is gone.
    public func terminate(_ id: NodeID) { stop(id, signal: SIGTERM) }

    private func stop(_ id: NodeID, signal: Int32) {
        guard let pid = pids[id], isRunning(id) else { return }
        if paused.contains(id) && signal != SIGKILL { kill(pid, SIGCONT) }
        kill(pid, signal)
        if let process = processes[id] {
            process.waitUntilExit()
        } else {
            for _ in 0..<200 where kill(pid, 0) == 0 { Thread.sleep(forTimeInterval: 0.01) }
        }
        paused.remove(id)
        dropConnections(id)
    }

    public func pause(_ id: NodeID) {
        guard let pid = pids[id], isRunning(id) else { return }
        kill(pid, SIGSTOP)
        paused.insert(id)
    }

    public func resume(_ id: NodeID) {
        guard let pid = pids[id], paused.contains(id) else { return }
        kill(pid, SIGCONT)
        paused.remove(id)
    }

    /// A scratch cluster: every process it started is stopped (resumed first, so that SIGTERM
    /// is seen; SIGKILL after `grace`). An adopted cluster: resumed, and left running.
    public func stopAll(grace: Double = 10) {
        for id in paused { resume(id) }
        guard owned else { return }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while processes.values.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
    }

    // MARK: Stopping on signals

    /// The clusters of runs under way, so that an interrupted tool (SIGINT, SIGTERM) still stops
    /// or resumes every member it touched.
    private static let live = Mutex<[ObjectIdentifier: ProcessCluster]>([:])
    private static let signalSources = Mutex<[any DispatchSourceSignal]>([])

    public func register() { Self.live.withLock { $0[ObjectIdentifier(self)] = self } }
    public func unregister() { _ = Self.live.withLock { $0.removeValue(forKey: ObjectIdentifier(self)) } }

    /// Installs SIGINT/SIGTERM handlers once: stop every registered cluster's members, say so
    /// with `message`, then exit 130.
    public static func stopOnSignals(message: String) {
        signalSources.withLock { sources in
            guard sources.isEmpty else { return }
            for signalNumber in [SIGINT, SIGTERM] {
                signal(signalNumber, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
                source.setEventHandler {
                    for cluster in live.withLock({ Array($0.values) }) { cluster.stopAll(grace: 3) }
                    FileHandle.standardError.write(Data((message + "\n").utf8))
                    exit(130)
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    // MARK: Injected faults (the debug build's fault hook)

    /// Sets one field of a member's fault file (nil removes it); the member re-reads the file at
    /// its next health check.
    public func setFault<Value>(
        _ id: NodeID, _ field: WritableKeyPath<InjectedFaults, Value?>, _ value: Value?
    )
        throws
    {
        faults[id, default: InjectedFaults()][keyPath: field] = value
        try writeFaults(id)
    }

    /// Removes every fault of a member.
    public func clearFaults(_ id: NodeID) throws {
        faults[id] = InjectedFaults()
        try writeFaults(id)
    }

    private func writeFaults(_ id: NodeID) throws {
        guard let file = members[id]?.faultFile else {
            throw HarnessError(
                "member \(id) has no fault file (disk, clock and planted faults need a scratch cluster)")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(faults[id]!).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    /// Whether a member has logged that it took up its fault file (only debug builds read one).
    public func tookFaults(_ id: NodeID) -> Bool { log(id).contains("injected faults changed") }

    // MARK: Connections

    /// A cached connection to member `id`'s admin or client API (as the operator) or its front
    /// (as client `name`).
    public func connection(_ id: NodeID, _ api: API, as name: String = "crmctl") throws -> MemberConnection {
        let key = "\(id)/\(api)/\(name)"
        let address = addresses(id)
        let endpoint = api == .admin ? address.admin : api == .client ? address.client : address.front
        let tls = tls(name)
        let token = api == .admin ? nil : bearerTokens.withLock { $0[name] }
        return try connections.withLock { connections in
            if let existing = connections[key] { return existing }
            let connection = try MemberConnection(
                host: endpoint.host, port: endpoint.port, tls: tls, bearerToken: token)
            connections[key] = connection
            return connection
        }
    }

    /// Forgets member `id`'s connections (after it was stopped), closing them in the background.
    public func dropConnections(_ id: NodeID) {
        let dropped = connections.withLock { connections in
            let dropped = connections.filter { $0.key.hasPrefix("\(id)/") }
            for key in dropped.keys { connections[key] = nil }
            return dropped
        }
        if !dropped.isEmpty { Task { for connection in dropped.values { await connection.close() } } }
    }

    public func closeConnections() async {
        let open = connections.withLock { connections in
            defer { connections = [:] }
            return connections
        }
        for key in open.keys.sorted() { await open[key]!.close() }
    }

    /// The admin connection to member `id` while it runs and is not paused.
    public func adminConnection(_ id: NodeID) -> MemberConnection? {
        guard isRunning(id), !paused.contains(id) else { return nil }
        return try? connection(id, .admin)
    }

    /// Member `id`'s status, or nil when it is stopped, paused or does not answer within `timeout`.
    /// A member's status; `hash` adds its state digest (a full read of its store).
    public func status(
        _ id: NodeID, timeout: Duration = .seconds(2), hash: Bool = false
    ) async -> Crm_V1_StatusResponse? {
        guard isRunning(id), !paused.contains(id) else { return nil }
        var options = CallOptions.defaults
        options.timeout = timeout
        var request = Crm_V1_StatusRequest()
        request.includeStateHash = hash
        return try? await connection(id, .admin).admin.status(request, options: options)
    }

    /// The leader the running, unpaused members agree on (0: none yet).
    public func leader(timeout: Duration = .seconds(2)) async -> NodeID {
        var named: Set<NodeID> = []
        for id in ids where isRunning(id) && !paused.contains(id) {
            guard let status = await status(id, timeout: timeout) else { continue }
            if status.role == .leader { return id }
            named.insert(status.leaderID)
        }
        return named.count == 1 ? named.first! : 0
    }

    /// The member every one of `running` names as leader, once they all answer and agree.
    public func waitForLeader(among running: [NodeID]? = nil, seconds: Double = 30) async -> NodeID? {
        let expected = running ?? ids
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var leaders: Set<NodeID> = []
            var answered = 0
            for id in expected {
                guard let status = await status(id) else { break }
                answered += 1
                leaders.insert(status.leaderID)
            }
            if answered == expected.count, leaders.count == 1, let leader = leaders.first, expected.contains(leader) {
                return leader
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return nil
    }

    /// Whether every member in `among` reports the same applied index and state hash.
    public func converged(among running: [NodeID]? = nil) async -> Bool {
        var states: Set<String> = []
        for id in running ?? ids {
            guard let status = await status(id, hash: true) else { return false }
            states.insert("\(status.appliedIndex)/\(status.stateHash)")
        }
        return states.count == 1
    }
}
