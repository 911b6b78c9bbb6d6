import NIOCore
import NIOSSL
import NIOTLS

/// Checks, once TLS is up, that the server's certificate names the member the caller meant
/// (`crm://member/<id>` among its URI names): the cluster CA vouches that a certificate is one
/// of ours, not that it belongs to the member at this address. A mismatch closes the
/// connection, so no call is ever sent to (or answered by) the wrong member.
public final class ExpectedServerCheck: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    let expectedURI: String

    init(member id: UInt64) {
        expectedURI = "crm://member/\(id)"
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
                .peerCertificate
            let uris =
                certificate?._subjectAlternativeNames().filter { $0.nameType == .uri }.map { name in
                    name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
                } ?? []
            guard uris.contains(expectedURI) else {
                context.fireErrorCaught(WrongServer(expected: expectedURI, presented: uris))
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Adds the check right after the TLS handler of a client connection being set up.
    public static func install(on channel: any Channel, member id: UInt64) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            let tls = try sync.handler(type: NIOSSLClientHandler.self)
            try sync.addHandler(ExpectedServerCheck(member: id), position: .after(tls))
        }
    }
}

/// The server at the dialled address is not the member meant.
public struct WrongServer: Error, CustomStringConvertible {
    public var expected: String
    public var presented: [String]
    public var description: String {
        "the server presents \(presented.isEmpty ? "no crm identity" : presented.joined(separator: ", ")), not \(expected); check the address"
    }
}
