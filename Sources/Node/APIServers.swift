import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix
import Transport

/// The client, admin and front gRPC listeners: mutual TLS (TLS 1.2 or later, a client
/// certificate signed by the cluster CA), a maximum request size, bounded connections and
/// streams (see `ListenerGuards`), and graceful shutdown.
final class APIServers: Sendable {
    private let servers: [GRPCServer<HTTP2ServerTransport.Posix>]
    private let tasks: [Task<Void, Never>]

    private init(servers: [GRPCServer<HTTP2ServerTransport.Posix>], tasks: [Task<Void, Never>]) {
        self.servers = servers
        self.tasks = tasks
    }

    /// One listener: where, bounded by which guard, serving which services.
    struct Listener: Sendable {
        var endpoint: Endpoint
        var connections: ConnectionGuard
        var services: [any RegistrableRPCService]
    }

    static func start(
        config: NodeConfig, listeners: [Listener], group: MultiThreadedEventLoopGroup,
        logger: Logger
    ) async throws -> APIServers {
        var servers: [GRPCServer<HTTP2ServerTransport.Posix>] = []
        var tasks: [Task<Void, Never>] = []
        for listener in listeners {
            let (endpoint, handlers) = (listener.endpoint, listener.services)
            let transport = HTTP2ServerTransport.Posix(
                address: endpoint.host.contains(":")
                    ? .ipv6(host: endpoint.host, port: endpoint.port) : .ipv4(host: endpoint.host, port: endpoint.port),
                transportSecurity: .mTLS(
                    certificateChain: [.file(path: config.tls.cert, format: .pem)],
                    privateKey: .file(path: config.tls.key, format: .pem)
                ) { tls in
                    tls.trustRoots = .certificates([.file(path: config.tls.ca, format: .pem)])
                    tls.clientCertificateVerification = .noHostnameVerification
                },
                config: .bounded(by: config, connections: listener.connections),
                eventLoopGroup: group)
            let server = GRPCServer(transport: transport, services: handlers)
            tasks.append(
                Task {
                    do {
                        try await server.serve()
                    } catch {
                        logger.error(
                            "gRPC listener stopped", metadata: ["address": "\(endpoint)", "error": "\(error)"])
                    }
                })
            servers.append(server)
            let bound: SocketAddress?
            do {
                bound = try await server.listeningAddress
            } catch {
                // A listener that cannot bind stops the ones already up: a start is all or nothing.
                await APIServers(servers: servers, tasks: tasks).stop()
                throw error
            }
            logger.info(
                "gRPC listener up", metadata: ["address": "\(endpoint)", "bound": "\(String(describing: bound))"])
        }
        return APIServers(servers: servers, tasks: tasks)
    }

    /// Stops accepting calls, lets running ones finish, and waits for the listeners to close.
    func stop() async {
        for server in servers { server.beginGracefulShutdown() }
        for task in tasks { await task.value }
    }
}
