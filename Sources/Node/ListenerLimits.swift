import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import Transport

/// The connection bounds of every listener, from the config (see `ConnectionGuard`). Each
/// listener gets its own guard, kept for the life of the member (listeners restarted after a
/// TLS change keep counting on it).
struct ListenerGuards: Sendable {
    let client: ConnectionGuard
    let admin: ConnectionGuard
    let health: ConnectionGuard
    let frontGRPC: ConnectionGuard
    let frontHTTP: ConnectionGuard

    init(config: NodeConfig) {
        let clientFacing = ConnectionLimits(
            maxConnections: config.maxConnectionsPerListener, maxConnectionsPerAddress: config.maxConnectionsPerAddress,
            firstRequestTimeout: .milliseconds(Int64(config.firstRequestMilliseconds)),
            idleTimeout: .milliseconds(Int64(config.connectionIdleMilliseconds)),
            requestReadTimeout: .milliseconds(Int64(config.requestReadMilliseconds)))
        // Operators and monitoring: a handful of connections, never a crowd.
        var small = clientFacing
        small.maxConnections = 64
        small.maxConnectionsPerAddress = min(16, clientFacing.maxConnectionsPerAddress)
        var health = small
        health.idleTimeout = .seconds(60)
        client = ConnectionGuard(name: "client", limits: clientFacing)
        admin = ConnectionGuard(name: "admin", limits: small)
        self.health = ConnectionGuard(name: "health", limits: health)
        frontGRPC = ConnectionGuard(name: "front.grpc", limits: clientFacing)
        frontHTTP = ConnectionGuard(name: "front.http", limits: clientFacing)
    }

    var all: [ConnectionGuard] { [client, admin, health, frontGRPC, frontHTTP] }
}

extension HTTP2ServerTransport.Posix.Config {
    /// A gRPC listener's settings: the request size, streams per connection, idle time and age
    /// from the config, and `connections` watching every accepted connection (HTTP/2 streams
    /// are its requests; the HTTP/2 layer reads them, so there is no request-read deadline).
    static func bounded(by config: NodeConfig, connections: ConnectionGuard) -> Self {
        .defaults { settings in
            settings.rpc.maxRequestPayloadSize = config.maxMessageBytes
            settings.http2.maxConcurrentStreams = config.maxConcurrentStreams
            // The graceful idle close (GOAWAY) comes first; the guard's hard close is the backstop.
            settings.connection.maxIdleTime = .milliseconds(Int64(config.connectionIdleMilliseconds) / 2)
            settings.connection.maxAge = .seconds(Int64(config.maxConnectionAgeSeconds))
            settings.connection.maxGraceTime = .seconds(30)
            settings.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                channel.eventLoop.makeCompletedFuture { try connections.admit(channel) }
            }
            settings.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
                if let connection = stream.parent {
                    ConnectionGuard.requestStarted(on: connection)
                    stream.closeFuture.whenComplete { _ in ConnectionGuard.requestEnded(on: connection) }
                }
                return stream.eventLoop.makeSucceededVoidFuture()
            }
        }
    }
}
