import CRMClient
import CRMProto
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Raft
import Synchronization

/// gRPC clients to the members' client APIs, authenticated with this member's own
/// certificate: for forwarding writes to the leader, for the front's calls and its polls.
final class MemberClients: Sendable {
    private let config: NodeConfig
    private let logger: Logger
    private let clients = Mutex<[NodeID: GRPCClient<HTTP2ClientTransport.Posix>]>([:])
    /// Client API addresses of every member known (config and the replicated directory).
    private let directory: Mutex<[NodeID: Endpoint]>
    private let tasks = Mutex<[Task<Void, Never>]>([])

    init(config: NodeConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        directory = Mutex(Dictionary(uniqueKeysWithValues: config.members.map { ($0.id, $0.client) }))
    }

    func update(_ addresses: [NodeID: Endpoint]) {
        directory.withLock { $0 = addresses }
    }

    /// The KV client for member `id`'s client API, connected on first use.
    func kv(_ id: NodeID) throws -> Crm_V1_KV.Client<HTTP2ClientTransport.Posix> {
        Crm_V1_KV.Client(wrapping: try client(id))
    }

    /// The records client for member `id`'s client API (the same connection).
    func records(_ id: NodeID) throws -> Crm_V1_Records.Client<HTTP2ClientTransport.Posix> {
        Crm_V1_Records.Client(wrapping: try client(id))
    }

    /// The directory client for member `id`'s client API (the same connection).
    func directory(_ id: NodeID) throws -> Crm_V1_Directory.Client<HTTP2ClientTransport.Posix> {
        Crm_V1_Directory.Client(wrapping: try client(id))
    }

    private func client(_ id: NodeID) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        if let existing = clients.withLock({ $0[id] }) { return existing }
        guard let address = directory.withLock({ $0[id] }) else {
            throw RPCError(code: .unavailable, message: "member \(id)'s client address is not known to this member")
        }
        let transport = try HTTP2ClientTransport.Posix(
            target: grpcTarget(host: address.host, port: address.port),
            transportSecurity: .mTLS(
                certificateChain: [.file(path: config.tls.cert, format: .pem)],
                privateKey: .file(path: config.tls.key, format: .pem)
            ) { tls in
                tls.trustRoots = .certificates([.file(path: config.tls.ca, format: .pem)])
                tls.serverCertificateVerification = .noHostnameVerification
            },
            // Members come and go within seconds (restarts, failovers): reconnect within 50 ms
            // to 1 s, not the default 1 s to 2 minutes, or a restarted leader stays unreachable.
            config: .defaults {
                $0.backoff = Self.reconnectBackoff
                // The server must be the member meant, not just any certificate of the cluster.
                $0.channelDebuggingCallbacks.onCreateTCPConnection = { ExpectedServerCheck.install(on: $0, member: id) }
            })
        let client = GRPCClient(transport: transport)
        let (stored, isNew) = clients.withLock { clients -> (GRPCClient<HTTP2ClientTransport.Posix>, Bool) in
            if let existing = clients[id] { return (existing, false) }
            clients[id] = client
            return (client, true)
        }
        if isNew {
            let task = Task { _ = try? await client.runConnections() }
            tasks.withLock { $0.append(task) }
        }
        return stored
    }

    static let reconnectBackoff = HTTP2ClientTransport.Config.Backoff(
        initial: .milliseconds(50), max: .seconds(1), multiplier: 1.6, jitter: 0.2)

    /// A call that failed before it left this member: its channel to the target was between
    /// connection attempts (the transport fails such calls at once, without sending them).
    static func wasNotSent(_ error: RPCError) -> Bool {
        error.code == .unavailable && error.message.contains("transient failure")
    }

    func shutdown() {
        for client in clients.withLock({ Array($0.values) }) { client.beginGracefulShutdown() }
    }
}
