import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import Transport

/// Who is at the other end of each connection to a member's gRPC listeners, learnt once per
/// connection when its TLS handshake completes, so that a call's caller is a dictionary
/// lookup. (The stock listener gave every call its certificate at the cost of two hops to the
/// connection's event loop and back and an X.509 parse; without them, 16 clients' serializable
/// gets through a leader's front went from 3,620–3,780 to 4,540–4,980 a second.)
///
/// Connections are known by their two addresses, as gRPC names them in `ServerContext`
/// (`localPeer`, `remotePeer`): while a connection is open no other has the same pair. A call
/// whose connection is not in the directory has no caller, and is refused.
final class CallerDirectory: Sendable {
    struct Caller: Sendable, Equatable {
        /// The identity its certificate names (nil: none, refused).
        var identity: PeerIdentity?
        /// Its certificate's serial number (for the deny list).
        var serial: [UInt8]
    }

    private let callers = Mutex<[String: Caller]>([:])

    func caller(of context: ServerContext) -> Caller? {
        callers.withLock { $0[Self.key(local: context.localPeer, remote: context.remotePeer)] }
    }

    var count: Int { callers.withLock { $0.count } }

    fileprivate func record(_ caller: Caller, key: String) { callers.withLock { $0[key] = caller } }
    fileprivate func forget(key: String) { callers.withLock { _ = $0.removeValue(forKey: key) } }

    static func key(local: String, remote: String) -> String { local + " " + remote }

    /// An address as gRPC writes it in a server context (IP sockets only: the listeners are TCP).
    static func peerName(_ address: NIOCore.SocketAddress?) -> String? {
        switch address {
        case .v4(let v4)?: return "ipv4:\(v4.host):\(address!.port!)"
        case .v6(let v6)?: return "ipv6:[\(v6.host)]:\(address!.port!)"
        default: return nil
        }
    }
}

/// Records a connection's caller in the directory when the TLS handshake completes (before
/// any request can arrive on it) and removes it when the connection closes.
private final class CallerRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let directory: CallerDirectory
    private var key: String?

    init(_ directory: CallerDirectory) { self.directory = directory }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent { record(context) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let key { directory.forget(key: key) }
        key = nil
        context.fireChannelInactive()
    }

    private func record(_ context: ChannelHandlerContext) {
        guard let local = CallerDirectory.peerName(context.channel.localAddress),
            let remote = CallerDirectory.peerName(context.channel.remoteAddress),
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
                .peerCertificate
        else { return }
        let key = CallerDirectory.key(local: local, remote: remote)
        self.key = key
        directory.record(
            CallerDirectory.Caller(identity: PeerIdentity(certificate: certificate), serial: certificate.serialNumber),
            key: key)
    }
}

/// A gRPC listener on mutual TLS (TLS 1.2 or later, a client certificate signed by the
/// cluster CA) that records each connection's caller in a `CallerDirectory`.
struct MutualTLSListenerFactory: HTTP2ServerTransport.ListenerFactory {
    let host: String
    let port: Int
    let eventLoopGroup: any EventLoopGroup
    let tls: NIOSSLContext
    let callers: CallerDirectory

    /// The server side of the member's TLS material, offering HTTP/2 by ALPN as gRPC does.
    static func tlsContext(_ files: TLSFiles) throws -> NIOSSLContext {
        var configuration = try TLSMaterial(files: files).serverConfiguration()
        configuration.applicationProtocols = ["grpc-exp", "h2"]
        return try NIOSSLContext(configuration: configuration)
    }

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        let (tls, callers) = (tls, callers)
        return try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { listenerConfigurator.configure(channel: $0) }
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    try channel.pipeline.syncOperations.addHandler(CallerRecorder(callers))
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: .configured(requireALPN: false))
                }
            }
    }
}
