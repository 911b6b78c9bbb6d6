import CRMClient
import ClusterHarness
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

#if canImport(Glibc)
import Glibc
#endif

/// Three etcd members on 127.0.0.1 with mutual TLS on client and peer URLs (a throwaway CA from
/// `cluster/make-etcd-certs.sh`), in a scratch directory; stopped by pid.
final class EtcdCluster: @unchecked Sendable {
    struct Member {
        var name: String
        var client: CRMClient.Endpoint
        var peer: CRMClient.Endpoint
        var process: Process?
    }

    let directory: String
    private(set) var members: [Member]
    var certificates: String { directory + "/certs" }
    var clientTLS: ClientTLSFiles {
        ClientTLSFiles(
            ca: certificates + "/ca.pem", certificate: certificates + "/client.pem",
            privateKey: certificates + "/client.key")
    }

    init(directory: String, repository: URL) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw HarnessError("no \(Self.binary): `make race` installs Debian's etcd-server")
        }
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Programs.run(
            "/bin/bash", [repository.appendingPathComponent("cluster/make-etcd-certs.sh").path, directory + "/certs"])
        members = try (1...3).map { n in
            Member(
                name: "etcd-\(n)", client: CRMClient.Endpoint(host: "127.0.0.1", port: try LoopbackPorts.reserve()),
                peer: CRMClient.Endpoint(host: "127.0.0.1", port: try LoopbackPorts.reserve()), process: nil)
        }
    }

    static let binary = "/usr/bin/etcd"

    deinit { stop() }

    /// Starts every member (logs in the directory) and waits until all answer a status call.
    func start(timeoutSeconds: Double = 30) async throws {
        for index in members.indices { try launch(index) }
        try await waitForLeader(timeoutSeconds: timeoutSeconds)
    }

    /// Kills member `index` with SIGKILL and waits for it to be gone.
    func kill9(_ index: Int) {
        guard let process = members[index].process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts member `index` again on its data directory and waits until all members agree on a leader.
    func restart(_ index: Int, timeoutSeconds: Double = 30) async throws {
        try launch(index)
        try await waitForLeader(timeoutSeconds: timeoutSeconds)
    }

    private func waitForLeader(timeoutSeconds: Double) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if await leader() != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("etcd elected no leader in \(timeoutSeconds) s; see \(directory)/etcd-*.log")
    }

    /// Starts member `index`'s process, its output appended to its log. On a data directory that
    /// exists, etcd ignores the initial-cluster flags and rejoins as the member it was.
    private func launch(_ index: Int) throws {
        let initialCluster = members.map { "\($0.name)=https://\($0.peer)" }.joined(separator: ",")
        let member = members[index]
        let n = index + 1
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "--name", member.name, "--data-dir", directory + "/\(member.name).data",
            "--listen-client-urls", "https://\(member.client)", "--advertise-client-urls",
            "https://\(member.client)",
            "--listen-peer-urls", "https://\(member.peer)", "--initial-advertise-peer-urls",
            "https://\(member.peer)",
            "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "crm-bench-race",
            "--client-cert-auth", "--trusted-ca-file", certificates + "/ca.pem",
            "--cert-file", certificates + "/member-\(n).pem", "--key-file", certificates + "/member-\(n).key",
            "--peer-client-cert-auth", "--peer-trusted-ca-file", certificates + "/ca.pem",
            "--peer-cert-file", certificates + "/member-\(n).pem",
            "--peer-key-file", certificates + "/member-\(n).key",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]
        let logPath = directory + "/\(member.name).log"
        if !FileManager.default.fileExists(atPath: logPath) {
            FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        members[index].process = process
    }

    /// The index in `members` of the member every member names as leader.
    func leader() async -> Int? {
        var ownIDs: [Int: UInt64] = [:]
        var named: Set<UInt64> = []
        for index in members.indices {
            guard let status = try? await status(index) else { return nil }
            ownIDs[index] = status.header.memberID
            named.insert(status.leader)
        }
        guard named.count == 1, let leader = named.first, leader != 0 else { return nil }
        return ownIDs.first { $0.value == leader }?.key
    }

    private func status(_ index: Int) async throws -> Etcdserverpb_StatusResponse {
        let connection = try EtcdConnection(endpoint: members[index].client, tls: clientTLS)
        defer { connection.shutdown() }
        var options = CallOptions.defaults
        options.timeout = .seconds(2)
        return try await connection.maintenance.status(Etcdserverpb_StatusRequest(), options: options)
    }

    var pids: [pid_t] { members.compactMap { $0.process?.processIdentifier } }

    /// SIGTERM to every member it started, SIGKILL after 5 s.
    func stop() {
        let running = members.compactMap(\.process).filter(\.isRunning)
        for process in running { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        while running.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for process in running where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in running { process.waitUntilExit() }
    }
}

/// A gRPC connection to one etcd member, through the same client stack as the cluster's own
/// (grpc-swift 2 over NIO's HTTP/2 transport, mutual TLS).
final class EtcdConnection: Sendable {
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let task: Task<Void, Never>
    let kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>
    let maintenance: Etcdserverpb_Maintenance.Client<HTTP2ClientTransport.Posix>

    init(endpoint: CRMClient.Endpoint, tls: ClientTLSFiles) throws {
        let transport = try HTTP2ClientTransport.Posix(
            target: grpcTarget(host: endpoint.host, port: endpoint.port),
            transportSecurity: .mTLS(
                certificateChain: [.file(path: tls.certificate, format: .pem)],
                privateKey: .file(path: tls.privateKey, format: .pem)
            ) { configuration in
                configuration.trustRoots = .certificates([.file(path: tls.ca, format: .pem)])
                configuration.serverCertificateVerification = .noHostnameVerification
            },
            // The transport settings `MemberConnection` uses for the cluster, so that only the server differs.
            config: .defaults {
                $0.http2.maxFrameSize = 1 << 20
                $0.backoff = .init(initial: .milliseconds(100), max: .seconds(2), multiplier: 1.6, jitter: 0.2)
            })
        let client = GRPCClient(transport: transport)
        self.client = client
        task = Task { try? await client.runConnections() }
        kv = Etcdserverpb_KV.Client(wrapping: client)
        maintenance = Etcdserverpb_Maintenance.Client(wrapping: client)
    }

    func shutdown() { client.beginGracefulShutdown() }
}
