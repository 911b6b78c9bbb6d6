import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Transport

/// The front's HTTP/1.1 listener over mutual TLS (the cluster CA signs every client's
/// certificate, whose crm identity is the rate-limit key). Request bodies are bounded; a
/// request that is too large, or a connection without a crm identity, is answered with an error
/// and closed. `drain` stops accepting, lets requests in progress finish (up to a bound), then
/// closes every connection.
final class FrontHTTPServer: Sendable {
    private let channel: any Channel
    private let connections: Connections
    private let logger: Logger

    private init(channel: any Channel, connections: Connections, logger: Logger) {
        self.channel = channel
        self.connections = connections
        self.logger = logger
    }

    /// Each connection takes the TLS context current when it is accepted, so a TLS change
    /// reaches this listener without a restart.
    static func start(
        host: String, port: Int, tls: ReloadingTLSContexts, api: FrontHTTPAPI, maxBodyBytes: Int,
        connections guarded: ConnectionGuard, denyList: DenyList, group: any EventLoopGroup,
        logger: Logger
    ) async throws -> FrontHTTPServer {
        let connections = Connections()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try guarded.admit(channel)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: tls.server))
                    try sync.configureHTTPServerPipeline(withErrorHandling: false)
                    try sync.addHandler(FrontHTTPProtocolErrorHandler())
                    try sync.addHandler(
                        FrontHTTPHandler(
                            api: api, maxBodyBytes: maxBodyBytes, connections: connections, denyList: denyList,
                            logger: logger))
                    connections.opened(channel)
                    channel.closeFuture.whenComplete { _ in connections.closed(channel) }
                }
            }
            .bind(host: host, port: port).get()
        logger.info("front HTTP listener up", metadata: ["address": "\(host):\(port)"])
        return FrontHTTPServer(channel: channel, connections: connections, logger: logger)
    }

    /// Stops accepting; idle connections close at once, busy ones after their response (or
    /// when `timeout` runs out).
    func drain(timeout: Duration) async {
        try? await channel.close()
        connections.startDraining()
        let deadline = ContinuousClock.now + timeout
        while connections.busyCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if connections.busyCount > 0 {
            logger.warning(
                "front drain timed out; closing requests in progress", metadata: ["busy": "\(connections.busyCount)"])
        }
        connections.closeAll()
    }
}

/// The open connections and which of them have a request in progress.
final class Connections: Sendable {
    private let state = Mutex<(open: [ObjectIdentifier: any Channel], busy: Set<ObjectIdentifier>, draining: Bool)>(
        ([:], [], false))

    var busyCount: Int { state.withLock { $0.busy.count } }
    var isDraining: Bool { state.withLock { $0.draining } }

    func opened(_ channel: any Channel) {
        let drainingNow = state.withLock { state -> Bool in
            if !state.draining { state.open[ObjectIdentifier(channel)] = channel }
            return state.draining
        }
        if drainingNow { channel.close(promise: nil) }
    }

    func closed(_ channel: any Channel) {
        state.withLock { state in
            state.open[ObjectIdentifier(channel)] = nil
            state.busy.remove(ObjectIdentifier(channel))
        }
    }

    func setBusy(_ channel: any Channel, _ busy: Bool) {
        state.withLock { state in
            if busy {
                state.busy.insert(ObjectIdentifier(channel))
            } else {
                state.busy.remove(ObjectIdentifier(channel))
            }
        }
    }

    func startDraining() {
        let idle = state.withLock { state -> [any Channel] in
            state.draining = true
            return state.open.filter { !state.busy.contains($0.key) }.map(\.value)
        }
        for channel in idle { channel.close(promise: nil) }
    }

    func closeAll() {
        for channel in state.withLock({ Array($0.open.values) }) { channel.close(promise: nil) }
    }
}

private final class FrontHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let api: FrontHTTPAPI
    let maxBodyBytes: Int
    let connections: Connections
    let denyList: DenyList
    let logger: Logger
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var tooLarge = false

    init(api: FrontHTTPAPI, maxBodyBytes: Int, connections: Connections, denyList: DenyList, logger: Logger) {
        self.api = api
        self.maxBodyBytes = maxBodyBytes
        self.connections = connections
        self.denyList = denyList
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
            tooLarge = false
            connections.setBusy(context.channel, true)
            ConnectionGuard.requestStarted(on: context.channel)
        case .body(var chunk):
            if body.readableBytes + chunk.readableBytes > maxBodyBytes {
                tooLarge = true
            } else {
                body.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            ConnectionGuard.requestRead(on: context.channel)
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive
        if tooLarge {
            let reply = FrontHTTPAPI.error(
                .init(code: .invalidArgument, message: "the request body is over \(maxBodyBytes) bytes"), status: 413)
            write(reply, keepAlive: false, context: context)
            return
        }
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
        guard let certificate, let identity = PeerIdentity(certificate: certificate) else {
            let reply = FrontHTTPAPI.error(
                .init(
                    code: .unauthenticated,
                    message:
                        "the client certificate names no crm identity (crm://client/<name>); make one with cluster/make-certs.sh"
                ))
            write(reply, keepAlive: false, context: context)
            return
        }
        if let refusal = denyList.refusal(serial: certificate.serialNumber, identity: identity) {
            write(
                FrontHTTPAPI.error(.init(code: .permissionDenied, message: "certificate refused: \(refusal)")),
                keepAlive: false, context: context)
            return
        }
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts.first ?? "")
        let query = parts.count == 2 ? String(parts[1]) : ""
        let ifMatch = head.headers["If-Match"].first
        let authorization = head.headers["Authorization"]
        let clientAddress = head.headers[DirectoryService.addressKey].first
        let method = head.method.rawValue
        let data = Data(body.readableBytesView)
        let api = self.api
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        Task {
            let reply = await api.handle(
                method: method, path: path, query: query, ifMatch: ifMatch, authorization: authorization,
                clientAddress: clientAddress, body: data, identity: identity)
            loop.execute {
                let (handler, context) = bound.value
                handler.write(reply, keepAlive: keepAlive, context: context)
            }
        }
    }

    private func write(_ reply: FrontHTTPAPI.Reply, keepAlive: Bool, context: ChannelHandlerContext) {
        let close = !keepAlive || connections.isDraining
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(reply.body.count)")
        if let retry = reply.retryAfterSeconds { headers.add(name: "Retry-After", value: "\(retry)") }
        if let etag = reply.etag { headers.add(name: "ETag", value: "\"\(etag)\"") }
        if close { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: reply.status)
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(
            wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: reply.body)))), promise: nil)
        let channel = context.channel
        let connections = self.connections
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            connections.setBusy(channel, false)
            ConnectionGuard.requestEnded(on: channel)
            if close { channel.close(promise: nil) }
        }
    }
}
