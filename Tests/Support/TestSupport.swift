import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Helpers shared by the tests that use real sockets.
public enum TestSockets {
    private static let handedOut = Mutex<Set<Int>>([])

    /// A free TCP port on loopback (bound, read, released), never the same one twice in a test
    /// run: the kernel may hand a just-released port out again.
    public static func freePort() throws -> Int {
        for _ in 0..<100 {
            let socket = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
            let port = socket.localAddress!.port!
            try socket.close().wait()
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw CocoaError(.fileWriteUnknown)
    }
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
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem))
            configuration.certificateVerification = .noHostnameVerification
            return try NIOSSLContext(configuration: configuration)
        }
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let context { try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil)) }
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
