import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix
import Transport

/// The client, admin and front gRPC listeners: mutual TLS (TLS 1.2 or later, a client
/// certificate signed by the cluster CA), a maximum request size, bounded connections and
/// streams (see `ListenerGuards`), and graceful shutdown.
final class APIServers: Sendable {
    typealias Server = GRPCServer<HTTP2ServerTransport.Custom<MutualTLSListenerFactory>>
    private let servers: [Server]
    private let tasks: [Task<Void, Never>]

    private init(servers: [Server], tasks: [Task<Void, Never>]) {
        self.servers = servers
        self.tasks = tasks
    }

    /// One listener: where, bounded by which guard, serving which services.
    struct Listener: Sendable {
        var endpoint: Endpoint
        var connections: ConnectionGuard
        var services: [any RegistrableRPCService]
        /// Where each connection's caller is recorded (the services' `Authorization`'s).
        var callers: CallerDirectory
    }

    static func start(
        config: NodeConfig, listeners: [Listener], group: MultiThreadedEventLoopGroup,
        logger: Logger
    ) async throws -> APIServers {
        var servers: [Server] = []
        var tasks: [Task<Void, Never>] = []
        let tls = try MutualTLSListenerFactory.tlsContext(config.tlsFiles)
        for listener in listeners {
            let (endpoint, handlers) = (listener.endpoint, listener.services)
            let limits = HTTP2ServerTransport.Posix.Config.bounded(by: config, connections: listener.connections)
            let transport = HTTP2ServerTransport.Custom(
                listenerFactory: MutualTLSListenerFactory(
                    host: endpoint.host, port: endpoint.port, eventLoopGroup: group, tls: tls,
                    callers: listener.callers),
                config: .init(
                    compression: limits.compression, connection: limits.connection, http2: limits.http2,
                    rpc: limits.rpc, channelDebuggingCallbacks: limits.channelDebuggingCallbacks))
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
            guard let bound = await transport.listeningAddress else {
                // A listener that cannot bind stops the ones already up: a start is all or nothing.
                await APIServers(servers: servers, tasks: tasks).stop()
                throw RPCError(code: .unavailable, message: "the gRPC listener on \(endpoint) could not bind")
            }
            logger.info(
                "gRPC listener up", metadata: ["address": "\(endpoint)", "bound": "\(bound)"])
        }
        return APIServers(servers: servers, tasks: tasks)
    }

    /// Stops accepting calls, lets running ones finish, and waits for the listeners to close.
    func stop() async {
        for server in servers { server.beginGracefulShutdown() }
        for task in tasks { await task.value }
    }
}
