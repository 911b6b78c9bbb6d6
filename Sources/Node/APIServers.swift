import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix

/// The client and admin gRPC listeners: mutual TLS (TLS 1.2 or later, a client certificate
/// signed by the cluster CA), a maximum request size, and graceful shutdown.
final class APIServers: Sendable {
    private let servers: [GRPCServer<HTTP2ServerTransport.Posix>]
    private let tasks: [Task<Void, Never>]

    private init(servers: [GRPCServer<HTTP2ServerTransport.Posix>], tasks: [Task<Void, Never>]) {
        self.servers = servers
        self.tasks = tasks
    }

    static func start(config: NodeConfig, services: [(Endpoint, [any RegistrableRPCService])], group: MultiThreadedEventLoopGroup,
                      logger: Logger) async throws -> APIServers {
        var servers: [GRPCServer<HTTP2ServerTransport.Posix>] = []
        var tasks: [Task<Void, Never>] = []
        for (endpoint, handlers) in services {
            let transport = HTTP2ServerTransport.Posix(
                address: endpoint.host.contains(":") ? .ipv6(host: endpoint.host, port: endpoint.port) : .ipv4(host: endpoint.host, port: endpoint.port),
                transportSecurity: .mTLS(certificateChain: [.file(path: config.tls.cert, format: .pem)],
                                         privateKey: .file(path: config.tls.key, format: .pem)) { tls in
                    tls.trustRoots = .certificates([.file(path: config.tls.ca, format: .pem)])
                    tls.clientCertificateVerification = .noHostnameVerification
                },
                config: .defaults { $0.rpc.maxRequestPayloadSize = config.maxMessageBytes },
                eventLoopGroup: group)
            let server = GRPCServer(transport: transport, services: handlers)
            tasks.append(Task {
                do {
                    try await server.serve()
                } catch {
                    logger.error("gRPC listener stopped", metadata: ["address": "\(endpoint)", "error": "\(error)"])
                }
            })
            servers.append(server)
            let bound = try await server.listeningAddress
            logger.info("gRPC listener up", metadata: ["address": "\(endpoint)", "bound": "\(String(describing: bound))"])
        }
        return APIServers(servers: servers, tasks: tasks)
    }

    /// Stops accepting calls, lets running ones finish, and waits for the listeners to close.
    func stop() async {
        for server in servers { server.beginGracefulShutdown() }
        for task in tasks { await task.value }
    }
}
