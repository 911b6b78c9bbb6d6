import CRMClient
import CRMProto
import CRMTestSupport
import Foundation
import GRPCCore
import NIOCore
import NIOPosix
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Real `crm-node` processes on loopback, started from the binaries built next to the tests,
/// with certificates, keys and configs made by the real scripts. Every process is killed by its
/// pid when the cluster is released.
final class ProcessCluster: @unchecked Sendable {
    let directory = NSTemporaryDirectory() + "crm-processes-" + UUID().uuidString
    let ids: [UInt64]
    var processes: [UInt64: Process] = [:]
    var endpoints: [UInt64: (peer: Int, client: Int, admin: Int, health: Int, front: Int, frontHTTP: Int)] = [:]
    /// Extra YAML appended to every member's config (a test's health or front settings).
    let extraConfig: String
    let frontConfig: [String]
    let spares: [UInt64]
    let deadAfterSeconds: Int?
    let autoReplace: Bool
    /// Where each member reads its injected disk faults (the debug build's fault hook).
    func faultFile(_ id: UInt64) -> String { directory + "/faults-\(id).json" }
    var connections: [String: MemberConnection] = [:]
    let tlsReloadSeconds: Int

    static var binaries: URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("crm-node").path) {
                return directory
            }
            directory.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug")
    }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// `spares`: members with certificates and a `join: true` config, not started and not founders.
    /// `frontConfig`: extra keys of every member's `front` section, one per line. `deadAfterSeconds`:
    /// write a `failover` section with it, listing the spares (replaced automatically if `autoReplace`).
    /// `tlsConfig`: extra keys of every member's `tls` section, one per line.
    let tlsConfig: [String]

    init(
        ids: [UInt64] = [1, 2, 3], spares: [UInt64] = [], snapshotEvery: Int = 10_000, tlsReloadSeconds: Int = 30,
        extraConfig: String = "", frontConfig: [String] = [], tlsConfig: [String] = [], deadAfterSeconds: Int? = nil,
        autoReplace: Bool = false
    ) throws {
        self.tlsConfig = tlsConfig
        self.ids = ids
        self.spares = spares
        self.deadAfterSeconds = deadAfterSeconds
        self.autoReplace = autoReplace
        self.tlsReloadSeconds = tlsReloadSeconds
        self.extraConfig = extraConfig
        self.frontConfig = frontConfig
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run(
            "/bin/bash",
            [
                Self.repository.appendingPathComponent("cluster/make-certs.sh").path, directory + "/certs",
                (ids + spares).map(String.init).joined(separator: ","), "crmctl", "app",
            ])
        for id in ids + spares {
            endpoints[id] = (
                try TestSockets.freePort(), try TestSockets.freePort(), try TestSockets.freePort(),
                try TestSockets.freePort(),
                try TestSockets.freePort(), try TestSockets.freePort()
            )
        }
        for id in ids { try writeConfig(id, members: ids, snapshotEvery: snapshotEvery) }
        for id in spares { try writeConfig(id, members: ids + [id], snapshotEvery: snapshotEvery, join: true) }
    }

    deinit {
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
        // CRM_KEEP_TEST_DIRS=1 keeps the configs and member logs for a look after a failure.
        if ProcessInfo.processInfo.environment["CRM_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.executableLoad) }
    }

    func configPath(_ id: UInt64) -> String { directory + "/node-\(id).yaml" }
    func logPath(_ id: UInt64) -> String { directory + "/node-\(id).log" }

    private func writeConfig(_ id: UInt64, members memberIDs: [UInt64], snapshotEvery: Int, join: Bool = false) throws {
        let me = endpoints[id]!
        let members = memberIDs.map { other -> String in
            let e = endpoints[other]!
            return
                "  - {id: \(other), peer: \"127.0.0.1:\(e.peer)\", client: \"127.0.0.1:\(e.client)\", admin: \"127.0.0.1:\(e.admin)\"}"
        }
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
        \(members.joined(separator: "\n"))
        tls:
          ca: certs/ca.pem
          cert: certs/member-\(id).pem
          key: certs/member-\(id).key
          reload_interval_seconds: \(tlsReloadSeconds)
        \(tlsConfig.map { "  " + $0 }.joined(separator: "\n"))
        admins: [crmctl]
        join: \(join)
        limits:
          snapshot_every_entries: \(snapshotEvery)
        front:
          grpc: "127.0.0.1:\(me.front)"
          http: "127.0.0.1:\(me.frontHTTP)"
        \(frontConfig.map { "  " + $0 }.joined(separator: "\n"))
        \(failoverSection())
        \(extraConfig)
        """.write(toFile: configPath(id), atomically: true, encoding: .utf8)
    }

    private func failoverSection() -> String {
        guard let deadAfterSeconds else { return "" }
        let spareList = spares.map { id -> String in
            let e = endpoints[id]!
            return
                "    - {id: \(id), peer: \"127.0.0.1:\(e.peer)\", client: \"127.0.0.1:\(e.client)\", admin: \"127.0.0.1:\(e.admin)\"}"
        }
        return "failover:\n  dead_after_seconds: \(deadAfterSeconds)\n  auto_replace: \(autoReplace)\n"
            + (spareList.isEmpty ? "" : "  spares:\n" + spareList.joined(separator: "\n"))
    }

    /// Starts (or restarts) member `id`; its log goes to node-<id>.log.
    func start(_ id: UInt64) throws {
        let process = Process()
        process.executableURL = Self.binaries.appendingPathComponent("crm-node")
        process.arguments = ["--config", configPath(id)]
        var environment = ProcessInfo.processInfo.environment
        environment["CRM_FAULT_FILE"] = faultFile(id)
        environment["CRM_EXIT_WITH_PARENT"] = "\(getpid())"
        process.environment = environment
        if !FileManager.default.fileExists(atPath: logPath(id)) {
            FileManager.default.createFile(atPath: logPath(id), contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath(id)))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        processes[id] = process
    }

    func startAll() throws { for id in ids { try start(id) } }

    /// kill -9, then waits for the process to be gone.
    func kill9(_ id: UInt64) {
        guard let process = processes[id], process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        connections = connections.filter { !$0.key.hasPrefix("\(id)/") }
    }

    func terminate(_ id: UInt64) {
        guard let process = processes[id], process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        connections = connections.filter { !$0.key.hasPrefix("\(id)/") }
    }

    var clientTLS: ClientTLSFiles { tls("crmctl") }

    func tls(_ client: String, certificates: String? = nil) -> ClientTLSFiles {
        let certs = certificates ?? directory + "/certs"
        return ClientTLSFiles(
            ca: certs + "/ca.pem", certificate: certs + "/client-\(client).pem",
            privateKey: certs + "/client-\(client).key")
    }

    func connection(_ id: UInt64, admin: Bool = false) throws -> MemberConnection {
        let key = "\(id)/\(admin ? "admin" : "client")"
        if let existing = connections[key] { return existing }
        let connection = try MemberConnection(
            host: "127.0.0.1", port: admin ? endpoints[id]!.admin : endpoints[id]!.client, tls: clientTLS)
        connections[key] = connection
        return connection
    }

    static let shortCall: CallOptions = {
        var options = CallOptions.defaults
        options.timeout = .seconds(2)
        return options
    }()

    func status(_ id: UInt64) async -> Crm_V1_StatusResponse? {
        try? await connection(id, admin: true).admin.status(Crm_V1_StatusRequest(), options: Self.shortCall)
    }

    /// The member every running member names as leader, once they agree.
    func waitForLeader(among running: [UInt64]? = nil, seconds: Double = 30) async -> UInt64? {
        let members = running ?? ids
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var leaders: Set<UInt64> = []
            var answered = 0
            for id in members {
                if let status = await status(id) {
                    answered += 1
                    leaders.insert(status.leaderID)
                }
            }
            if answered == members.count, leaders.count == 1, let leader = leaders.first, leader != 0,
                members.contains(leader)
            {
                return leader
            }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return nil
    }

    func put(_ key: String, _ value: String, via id: UInt64, session: (UInt64, UInt64)? = nil) async throws {
        var request = Crm_V1_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        if let (sessionID, sequence) = session {
            request.session.sessionID = sessionID
            request.session.sequence = sequence
        }
        _ = try await connection(id).kv.put(request, options: Self.shortCall)
    }

    func get(_ key: String, via id: UInt64, serializable: Bool = false) async throws -> String? {
        var request = Crm_V1_GetRequest()
        request.key = Data(key.utf8)
        request.consistency = serializable ? .serializable : .linearizable
        let response = try await connection(id).kv.get(request, options: Self.shortCall)
        return response.found ? String(decoding: response.value, as: UTF8.self) : nil
    }

    func log(_ id: UInt64) -> String { (try? String(contentsOfFile: logPath(id), encoding: .utf8)) ?? "" }

    /// GET on the member's health listener (`/metrics`, `/readyz`, `/livez`): status and body.
    func health(_ id: UInt64, _ path: String = "/metrics") async -> (status: Int, body: String) {
        guard
            let (data, response) = try? await URLSession.shared.data(
                from: URL(string: "http://127.0.0.1:\(endpoints[id]!.health)\(path)")!)
        else {
            return (0, "")
        }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// Whether every member in `among` reports the same applied index and state hash.
    func converged(among members: [UInt64]? = nil) async -> Bool {
        var states: Set<String> = []
        for id in members ?? ids {
            guard let status = await status(id) else { return false }
            states.insert("\(status.appliedIndex)/\(status.stateHash)")
        }
        return states.count == 1
    }

    /// Writes the cluster file crmctl and crm-bench read, as `make up` does.
    func writeClusterFile() throws -> String {
        let members = ids.map { id -> String in
            let e = endpoints[id]!
            return
                "{\"id\": \(id), \"peer\": \"127.0.0.1:\(e.peer)\", \"client\": \"127.0.0.1:\(e.client)\", \"admin\": \"127.0.0.1:\(e.admin)\", "
                + "\"health\": \"127.0.0.1:\(e.health)\", \"front\": \"127.0.0.1:\(e.front)\", \"front_http\": \"127.0.0.1:\(e.frontHTTP)\", "
                + "\"pid\": \(processes[id]?.processIdentifier ?? 0), \"config\": \"node-\(id).yaml\"}"
        }
        // Pid files, as cluster/local-cluster.sh leaves them (crm-chaos --cluster kills and restarts by them).
        for id in ids where processes[id]?.isRunning == true {
            try "\(processes[id]!.processIdentifier)\n".write(
                toFile: directory + "/node-\(id).pid", atomically: true, encoding: .utf8)
        }
        let path = directory + "/cluster.json"
        try
            "{\"members\": [\(members.joined(separator: ","))], \"tls\": {\"ca\": \"certs/ca.pem\", \"cert\": \"certs/client-crmctl.pem\", \"key\": \"certs/client-crmctl.key\"}}"
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs one of the built tools (crmctl, crm-bench) to the end: exit status, stdout, stderr.
    static func tool(
        _ name: String, _ arguments: [String], input: Data? = nil
    ) throws -> (status: Int32, output: String, errors: String) {
        try tool(absolute: binaries.appendingPathComponent(name).path, arguments, input: input)
    }

    /// Runs any program to the end (`input` on its standard input): exit status, stdout, stderr.
    static func tool(
        absolute path: String, _ arguments: [String], input: Data? = nil
    ) throws -> (status: Int32, output: String, errors: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        if let input {
            let pipe = Pipe()
            process.standardInput = pipe
            let writer = pipe.fileHandleForWriting
            Thread {
                writer.write(input)
                try? writer.close()
            }.start()
        }
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read both pipes while it runs, so that neither fills and blocks the tool.
        let errorData = Mutex(Data())
        let errorReader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
        errorReader.start()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while errorReader.isExecuting || !errorReader.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        return (
            process.terminationStatus, String(decoding: out, as: UTF8.self),
            String(decoding: errorData.withLock { $0 }, as: UTF8.self)
        )
    }

    /// Writes the faults member `id` injects into its own disk (read within a health check).
    func injectFaults(_ id: UInt64, _ json: String) throws {
        try json.write(toFile: faultFile(id), atomically: true, encoding: .utf8)
    }

    /// Front HTTP request from the client `client` (its certificate): status, headers, body.
    func frontHTTP(
        _ id: UInt64, _ method: String, _ path: String, json: String = "", client: String = "app",
        headers: [(String, String)] = []
    ) async throws -> HTTPSRequest.Response {
        let files = tls(client)
        return try await HTTPSRequest.send(
            port: endpoints[id]!.frontHTTP, method: method, path: path, body: Data(json.utf8),
            tls: (files.ca, files.certificate, files.privateKey), extraHeaders: headers)
    }

    /// Member views from front `id`'s `/v1/cluster` (empty when the reply is not that JSON).
    func frontMembers(_ id: UInt64) async -> [[String: Any]] {
        guard let view = try? await frontHTTP(id, "GET", "/v1/cluster"),
            let object = try? JSONSerialization.jsonObject(with: view.body) as? [String: Any]
        else { return [] }
        return object["members"] as? [[String: Any]] ?? []
    }

    /// Waits until front `id` has polled every member as readable: right after an election a
    /// follower that has not yet heard the new leader is (correctly) shown "knows no leader".
    func frontSeesEveryMemberReadable(_ id: UInt64, seconds: Double = 15) async -> Bool {
        await eventually(seconds: seconds) {
            let members = await frontMembers(id)
            return members.count == ids.count && members.allSatisfy { $0["readable"] as? Bool == true }
        }
    }

    /// A gRPC connection to member `id`'s front.
    func frontConnection(_ id: UInt64, client: String = "app") throws -> MemberConnection {
        let key = "\(id)/front/\(client)"
        if let existing = connections[key] { return existing }
        let connection = try MemberConnection(host: "127.0.0.1", port: endpoints[id]!.front, tls: tls(client))
        connections[key] = connection
        return connection
    }

    func closeConnections() async {
        for connection in connections.values { await connection.close() }
        connections = [:]
    }
}

/// Every suite that starts real processes, run one test at a time: each test owns the machine's
/// ports and cores while it measures.
@Suite(.serialized) struct RealProcessTests {}
