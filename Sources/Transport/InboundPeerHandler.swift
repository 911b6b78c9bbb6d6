import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Raft
import Wire

/// On an accepted peer connection: waits for the hello, checks it against the certificate and
/// the member list, then decodes frames into Raft messages and hands them to the transport. A
/// snapshot's data goes to a file in the snapshot spool as it arrives, and its message is
/// delivered once the last chunk is in and checked. Anything wrong closes this connection
/// (and drops a partial snapshot), with a log line saying why.
final class InboundPeerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    /// Strong: the transport closes its inbound connections when it stops.
    private let transport: PeerTransport
    private var decoder: FrameDecoder
    private var peer: NodeID?
    private var snapshot: (message: Message, check: SnapshotStreamCheck, file: SpoolWriter)?
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
        dropSnapshot()
    }

    private func dropSnapshot() {
        snapshotDeadline?.cancel()
        snapshot?.file.abandon()
        snapshot = nil
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
            // Messages go on while a snapshot arrives (the leader keeps sending heartbeats).
            var ready: [Message] = []
            for message in try RaftMessageCoding.decode(frame.payload) {
                guard message.from == peer, message.to == transport.selfID else {
                    throw PeerRefusal(
                        description: "member \(peer) sent a message from \(message.from) to \(message.to)")
                }
                if let metadata = message.snapshot?.metadata {
                    try beginSnapshot(message, metadata, context: context)
                } else {
                    ready.append(message)
                }
            }
            return ready
        case .snapshotChunk:
            guard let (announced, checked, file) = snapshot else {
                throw PeerRefusal(description: "a snapshot chunk without its snapshot")
            }
            var (message, check) = (announced, checked)
            let chunk = try SnapshotChunk(encoded: frame.payload)
            try check.accept(chunk)
            try file.append(chunk.data)
            guard check.isComplete else {
                snapshot = (message, check, file)
                startSnapshotDeadline(context)
                return nil
            }
            snapshot = nil
            snapshotDeadline?.cancel()
            message.snapshot?.source = try file.finish(checksum: check.checksum)
            transport.logger.info(
                "snapshot received",
                metadata: ["peer": "\(peer)", "index": "\(check.index)", "bytes": "\(check.receivedBytes)"])
            return [message]
        }
    }

    /// A snapshot message: its data follows in chunks, into a spool file. One that replaces a
    /// snapshot still arriving drops that one (the leader started again).
    private func beginSnapshot(_ message: Message, _ metadata: SnapshotMetadata, context: ChannelHandlerContext) throws
    {
        guard let spool = transport.snapshotSpool else {
            throw PeerRefusal(description: "a snapshot, and this member keeps no snapshot directory")
        }
        if let unfinished = snapshot {
            transport.logger.warning(
                "a new snapshot replaces one still arriving",
                metadata: ["index": "\(metadata.index)", "unfinished_index": "\(unfinished.check.index)"])
            dropSnapshot()
        }
        let file = try spool.begin(index: metadata.index, term: metadata.term)
        snapshot = (
            message,
            SnapshotStreamCheck(
                index: metadata.index, term: metadata.term, maxBytes: transport.options.maxSnapshotBytes),
            file
        )
        startSnapshotDeadline(context)
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

    /// Rearmed by every chunk: a snapshot may take long, but not stall.
    private func startSnapshotDeadline(_ context: ChannelHandlerContext) {
        snapshotDeadline?.cancel()
        let timeout = transport.options.snapshotIdleTimeout
        snapshotDeadline = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            guard let self, self.snapshot != nil else { return }
            self.refuse(context, "a snapshot stopped arriving for \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ reason: String) {
        dropSnapshot()
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
