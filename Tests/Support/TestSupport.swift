import ClusterHarness
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Helpers shared by the tests that use real sockets.
public enum TestSockets {
    /// A free port on loopback (see `LoopbackPorts.reserve`).
    public static func freePort() throws -> Int { try LoopbackPorts.reserve() }
}

/// Polls `condition` every 20 ms for at most `seconds`.
public func eventually(seconds: Double = 5, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
    return await condition()
}

/// A raw connection (TLS with the given certificate, or plain TCP) for sending whatever bytes
/// a test wants to a listener.
public final class RawConnection: @unchecked Sendable {
    public let channel: any Channel

    /// `tls`: CA bundle, certificate and key paths (PEM); nil for plain TCP.
    public init(port: Int, tls: (ca: String, certificate: String, key: String)?) async throws {
        let context: NIOSSLContext? = try tls.map { files in
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.ca))
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map {
                .certificate($0)
            }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
            configuration.certificateVerification = .noHostnameVerification
            return try NIOSSLContext(configuration: configuration)
        }
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let context {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: nil))
                }
            }
        }
        channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
    }

    public func write(_ bytes: [UInt8]) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(buffer).get()
    }

    public var isClosed: Bool { !channel.isActive }

    public func close() async { try? await channel.close() }
}

/// One HTTP/1.1 request over mutual TLS (`Connection: close`), read to the end: enough for
/// tests of an HTTPS listener without a client library.
public enum HTTPSRequest {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: Data
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public static func send(
        port: Int, method: String, path: String, body: Data = Data(),
        tls: (ca: String, certificate: String, key: String), timeout: TimeAmount = .seconds(10),
        extraHeaders: [(String, String)] = []
    ) async throws -> Response {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tls.ca))
        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) }
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem))
        configuration.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: configuration)
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let extra = extraHeaders.map { "\($0.0): \($0.1)\r\n" }.joined()
        let head =
            "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
        var buffer = channel.allocator.buffer(capacity: head.utf8.count + body.count)
        buffer.writeString(head)
        buffer.writeBytes(body)
        try await channel.writeAndFlush(buffer).get()
        let scheduled = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        let raw = try await collector.done.futureResult.get()
        scheduled.cancel()
        return try parse(raw)
    }

    private static func parse(_ raw: [UInt8]) throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let split = (0..<max(0, raw.count - 3)).first(where: { Array(raw[$0..<$0 + 4]) == separator }) else {
            throw CocoaError(.fileReadCorruptFile)
        }
        let lines = String(decoding: raw[..<split], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw CocoaError(.fileReadCorruptFile) }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        return Response(status: status, headers: headers, body: Data(raw[(split + 4)...]))
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var bytes: [UInt8] = []
        var done: EventLoopPromise<[UInt8]>!

        func handlerAdded(context: ChannelHandlerContext) { done = context.eventLoop.makePromise() }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
        }

        private var finished = false

        func channelInactive(context: ChannelHandlerContext) {
            guard !finished else { return }
            finished = true
            done.succeed(bytes)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A TLS close without close_notify still ends the response; an error before any byte fails it.
            if bytes.isEmpty && !finished {
                finished = true
                done.fail(error)
            }
            context.close(promise: nil)
        }
    }
}
