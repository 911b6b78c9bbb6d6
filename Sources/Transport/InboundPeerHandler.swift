import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Raft
import Wire

/// On an accepted peer connection: waits for the hello, checks it against the certificate and
/// the member list, then decodes frames into Raft messages (reassembling snapshots) and hands
/// them to the transport. Anything wrong closes this connection, with a log line saying why.
final class InboundPeerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    /// Strong: the transport closes its inbound connections when it stops.
    private let transport: PeerTransport
    private var decoder: FrameDecoder
    private var peer: NodeID?
    private var snapshot: (message: Message, assembly: SnapshotAssembly)?
    private var helloDeadline: Scheduled<Void>?
    private var snapshotDeadline: Scheduled<Void>?
    private var remote = "unknown"

    init(transport: PeerTransport) {
        self.transport = transport
        decoder = FrameDecoder(maxFrameBytes: Hello.payloadBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        remote = context.channel.remoteAddress.map { "\($0)" } ?? "unknown"
        let timeout = transport.options.handshakeTimeout
        helloDeadline = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            guard let self, self.peer == nil else { return }
            self.refuse(context, "no TLS handshake and hello within \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        helloDeadline?.cancel()
        snapshotDeadline?.cancel()
    }

    /// Once TLS is up, only a member certificate may go on: the CA signs client certificates
    /// too, and those have no business on the peer port.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
                .peerCertificate
            let identity = certificate.flatMap(PeerIdentity.init(certificate:))
            if let certificate,
                let refusal = transport.denyList?.refusal(serial: certificate.serialNumber, identity: identity)
            {
                refuse(context, refusal)
                return
            }
            switch identity {
            case .member(let id)? where transport.isMember(id):
                break
            case let identity?:
                refuse(context, "the certificate names \(identity), which is not a member")
                return
            case nil:
                refuse(context, "the client certificate names no crm identity")
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        decoder.feed(buffer.readBytes(length: buffer.readableBytes) ?? [])
        do {
            var batch: [Message] = []
            while let frame = try decoder.next() {
                if let complete = try handle(frame, context: context) { batch += complete }
            }
            if let peer, !batch.isEmpty {
                // The close of a removed member's connection is asynchronous; what it sent
                // meanwhile is not delivered.
                guard transport.isMember(peer) else {
                    throw PeerRefusal(description: "member \(peer) is not in this member's member list")
                }
                transport.deliver(batch, from: peer)
            }
        } catch {
            refuse(context, "\(error)")
        }
    }

    /// Messages ready for delivery from one frame.
    private func handle(_ frame: Frame, context: ChannelHandlerContext) throws -> [Message]? {
        guard let peer else {
            try accept(hello: frame, context: context)
            return nil
        }
        switch frame.type {
        case .hello:
            throw PeerRefusal(description: "a second hello")
        case .raftMessages:
            guard snapshot == nil else { throw PeerRefusal(description: "messages in the middle of a snapshot") }
            var ready: [Message] = []
            for decoded in try RaftMessageCoding.decode(frame.payload) {
                let message = decoded.message
                guard message.from == peer, message.to == transport.selfID else {
                    throw PeerRefusal(
                        description: "member \(peer) sent a message from \(message.from) to \(message.to)")
                }
                if let metadata = message.snapshot?.metadata, let bytes = decoded.snapshotDataBytes {
                    guard snapshot == nil else { throw PeerRefusal(description: "two snapshots at once") }
                    let assembly = try SnapshotAssembly(
                        index: metadata.index, term: metadata.term, totalBytes: bytes,
                        maxBytes: transport.options.maxSnapshotBytes)
                    snapshot = (message, assembly)
                    startSnapshotDeadline(context)
                } else {
                    ready.append(message)
                }
            }
            return ready
        case .snapshotChunk:
            guard var (message, assembly) = snapshot else {
                throw PeerRefusal(description: "a snapshot chunk without its snapshot")
            }
            try assembly.add(try SnapshotChunk(encoded: frame.payload))
            guard assembly.isComplete else {
                snapshot = (message, assembly)
                return nil
            }
            snapshot = nil
            snapshotDeadline?.cancel()
            message.snapshot?.data = assembly.data
            return [message]
        }
    }

    private func accept(hello frame: Frame, context: ChannelHandlerContext) throws {
        let claimed = try Hello.decode(frame)
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate
        guard let certificate, let identity = PeerIdentity(certificate: certificate) else {
            throw PeerRefusal(description: "the client certificate names no crm identity")
        }
        guard identity == .member(claimed) else {
            throw PeerRefusal(description: "hello claims member \(claimed) but the certificate names \(identity)")
        }
        guard claimed != transport.selfID, transport.isMember(claimed) else {
            throw PeerRefusal(description: "member \(claimed) is not in this member's member list")
        }
        guard transport.registerInbound(context.channel, peer: claimed) else {
            throw PeerRefusal(description: "member \(claimed) is not in this member's member list")
        }
        peer = claimed
        helloDeadline?.cancel()
        decoder.maxFrameBytes = transport.options.maxFrameBytes
        ConnectionGuard.requestStarted(on: context.channel)
        transport.logger.info("peer connected", metadata: ["peer": "\(claimed)", "remote": "\(remote)"])
    }

    private func startSnapshotDeadline(_ context: ChannelHandlerContext) {
        let timeout = transport.options.snapshotAssemblyTimeout
        snapshotDeadline = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            guard let self, self.snapshot != nil else { return }
            self.refuse(context, "a snapshot did not arrive whole within \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ reason: String) {
        guard context.channel.isActive else { return }
        transport.recordRefusal(reason)
        transport.logger.warning(
            "closing peer connection",
            metadata: [
                "remote": "\(remote)", "peer": "\(peer.map { "\($0)" } ?? "unverified")", "reason": "\(reason)",
            ])
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // TLS failures land here: unknown CA, no client certificate, a protocol below TLS 1.2.
        refuse(context, "\(error)")
    }
}
