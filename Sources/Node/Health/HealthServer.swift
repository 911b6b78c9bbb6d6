import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Transport

/// The plain-HTTP health listener: `/livez` (200 while the member runs and its storage works),
/// `/readyz` (200 once a leader is known and this member has applied what it knows committed;
/// 503 with the reasons otherwise) and `/metrics` (Prometheus text format). Bind it to
/// loopback or a monitoring network: it carries no data, only state.
final class HealthServer: Sendable {
    struct Probe: Sendable {
        var live: @Sendable () -> (Bool, String)
        var ready: @Sendable () -> (Bool, String)
        var metrics: @Sendable () -> [UInt8]
    }

    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    static func start(
        host: String, port: Int, probe: Probe, connections: ConnectionGuard, group: any EventLoopGroup,
        logger: Logger
    ) async throws -> HealthServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try connections.admit(channel)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(HealthHandler(probe: probe))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("health listener up", metadata: ["address": "\(host):\(port)"])
        return HealthServer(channel: channel)
    }

    func stop() async { try? await channel.close() }
}

private final class HealthHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let probe: HealthServer.Probe
    private var path: String?
    private var method: HTTPMethod = .GET

    init(probe: HealthServer.Probe) { self.probe = probe }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?").first ?? "")
            method = head.method
            ConnectionGuard.requestStarted(on: context.channel)
        case .body:
            break // probes carry no body; anything sent is ignored
        case .end:
            ConnectionGuard.requestRead(on: context.channel)
            respond(context)
        }
    }

    private func respond(_ context: ChannelHandlerContext) {
        let status: HTTPResponseStatus
        var body: [UInt8]
        var type = "text/plain; charset=utf-8"
        switch (method, path) {
        case (.GET, "/livez"?):
            let (live, text) = probe.live()
            (status, body) = (live ? .ok : .serviceUnavailable, Array((text + "\n").utf8))
        case (.GET, "/readyz"?):
            let (ready, text) = probe.ready()
            (status, body) = (ready ? .ok : .serviceUnavailable, Array((text + "\n").utf8))
        case (.GET, "/metrics"?):
            (status, body) = (.ok, probe.metrics())
            type = "text/plain; version=0.0.4; charset=utf-8"
        default:
            (status, body) = (.notFound, Array("not found: try /livez, /readyz or /metrics\n".utf8))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in ConnectionGuard.requestEnded(on: channel)
        }
        body = []
    }
}
