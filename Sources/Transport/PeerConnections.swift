import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Raft
import Synchronization
import Wire

/// The connection this member dials to one peer, and the bounded queue of frames towards it.
/// It reconnects with a growing delay while the peer is a member.
final class OutboundPeer: Sendable {
    let id: NodeID
    let address: PeerAddress
    let eventLoop: any EventLoop
    /// Strong: the transport closes its peers when it stops, which ends this cycle.
    private let transport: PeerTransport
    /// Bytes written to the channel and not yet flushed out.
    private let queuedBytes = Atomic<Int>(0)
    private let state = Mutex(ConnectionState())
    /// The snapshot being streamed to this peer, if any (a newer one replaces it).
    private let sender = Mutex<SnapshotSender?>(nil)

    private struct ConnectionState {
        var channel: (any Channel)?
        var connecting = false
        var closed = false
        var delay: TimeAmount?
    }

    init(id: NodeID, address: PeerAddress, transport: PeerTransport, eventLoop: any EventLoop) {
        self.id = id
        self.address = address
        self.transport = transport
        self.eventLoop = eventLoop
    }

    /// Queues frames; false if not connected or the queue is full (nothing is queued then).
    func enqueue(_ frames: [OutboundFrame]) -> Bool {
        guard let channel = state.withLock({ $0.channel }) else { return false }
        let bytes = frames.reduce(0) { $0 + $1.frame.payload.count + FrameHeader.byteCount }
        let before = queuedBytes.add(bytes, ordering: .relaxed).oldValue
        guard before + bytes <= transport.options.sendQueueBytes || before == 0 else {
            queuedBytes.subtract(bytes, ordering: .relaxed)
            for frame in frames where frame.snapshot != nil { transport.snapshotSent(to: id, delivered: false) }
            return false
        }
        eventLoop.execute { [self] in
            for outbound in frames {
                var buffer = channel.allocator.buffer(capacity: outbound.frame.payload.count + FrameHeader.byteCount)
                buffer.writeBytes(
                    FrameHeader(type: outbound.frame.type, payloadBytes: UInt32(outbound.frame.payload.count)).encoded)
                buffer.writeBytes(outbound.frame.payload)
                let size = buffer.readableBytes
                let promise = eventLoop.makePromise(of: Void.self)
                promise.futureResult.whenComplete { [self] _ in queuedBytes.subtract(size, ordering: .relaxed) }
                channel.write(buffer, promise: promise)
                if let snapshot = outbound.snapshot { stream(snapshot, on: channel) }
            }
            channel.flush()
        }
        return true
    }

    /// Streams a snapshot's data after its message (already written, so the chunks follow it).
    private func stream(_ snapshot: Snapshot, on channel: any Channel) {
        let next = SnapshotSender(
            peer: id, channel: channel, snapshot: snapshot,
            chunkBytes: min(transport.options.snapshotChunkBytes, transport.options.maxFrameBytes - 64),
            transport: transport)
        sender.withLock { current in
            current?.cancel()
            current = next
        }
        next.start()
    }

    func connect() {
        let proceed = state.withLock { state -> Bool in
            guard !state.closed, state.channel == nil, !state.connecting else { return false }
            state.connecting = true
            return true
        }
        guard proceed else { return }
        let options = transport.options
        let tls = transport.tls
        let selfID = transport.selfID
        let peerID = id
        let denyList = transport.denyList
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(try NIOSSLClientHandler(context: tls.client, serverHostname: nil))
                    try sync.addHandler(OutboundHandshakeHandler(selfID: selfID, peerID: peerID, denyList: denyList))
                }
            }
        bootstrap.connect(host: address.host, port: address.port).flatMap { channel in
            channel.pipeline.handler(type: OutboundHandshakeHandler.self).flatMap { $0.verified }.map { channel }
        }.whenComplete { [self] result in
            switch result {
            case .success(let channel):
                let keep = state.withLock { state -> Bool in
                    state.connecting = false
                    guard !state.closed else { return false }
                    state.channel = channel
                    state.delay = nil
                    return true
                }
                guard keep else {
                    channel.close(promise: nil)
                    return
                }
                transport.logger.info("connected to peer", metadata: ["peer": "\(id)", "address": "\(address)"])
                channel.closeFuture.whenComplete { [self] _ in
                    state.withLock { $0.channel = nil }
                    transport.logger.info("connection to peer closed", metadata: ["peer": "\(id)"])
                    scheduleReconnect()
                }
            case .failure(let error):
                state.withLock { $0.connecting = false }
                transport.logger.debug(
                    "cannot connect to peer", metadata: ["peer": "\(id)", "address": "\(address)", "error": "\(error)"])
                if error is PeerRefusal {
                    transport.logger.error("peer refused", metadata: ["peer": "\(id)", "reason": "\(error)"])
                }
                scheduleReconnect()
            }
        }
    }

    private func scheduleReconnect() {
        let options = transport.options
        let delay: TimeAmount? = state.withLock { state in
            guard !state.closed else { return nil }
            let doubled = state.delay.map { TimeAmount.nanoseconds($0.nanoseconds * 2) } ?? options.reconnectDelayMin
            let next = min(options.reconnectDelayMax, doubled)
            state.delay = next
            return next
        }
        guard let delay else { return }
        eventLoop.scheduleTask(in: delay) { [self] in connect() }
    }

    func close() {
        let channel = state.withLock { state -> (any Channel)? in
            state.closed = true
            return state.channel
        }
        sender.withLock { $0?.cancel() }
        channel?.close(promise: nil)
    }
}

/// Why a peer connection was refused at its start.
struct PeerRefusal: Error, CustomStringConvertible {
    var description: String
}

/// On a dialled connection: once TLS is up, checks that the server's certificate names the
/// member that was dialled, then sends the hello.
final class OutboundHandshakeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let selfID: NodeID
    let peerID: NodeID
    private var promise: EventLoopPromise<Void>?
    private var outcome: EventLoopFuture<Void>?

    let denyList: DenyList?

    init(selfID: NodeID, peerID: NodeID, denyList: DenyList?) {
        self.selfID = selfID
        self.peerID = peerID
        self.denyList = denyList
    }

    /// Succeeds once the peer is verified and the hello is on its way (use on the event loop,
    /// after the handler was added).
    var verified: EventLoopFuture<Void> { outcome! }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        self.promise = promise
        outcome = promise.futureResult
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { check(context) }
        context.fireUserInboundEventTriggered(event)
    }

    private func check(_ context: ChannelHandlerContext) {
        let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
        guard let certificate, let identity = PeerIdentity(certificate: certificate) else {
            return fail(
                context,
                PeerRefusal(
                    description: "the server at this address presents no crm identity; expected crm://member/\(peerID)")
            )
        }
        guard identity == .member(peerID) else {
            return fail(
                context, PeerRefusal(description: "dialled member \(peerID) but the certificate names \(identity)"))
        }
        if let refusal = denyList?.refusal(serial: certificate.serialNumber, identity: identity) {
            return fail(context, PeerRefusal(description: "dialled member \(peerID): \(refusal)"))
        }
        var buffer = context.channel.allocator.buffer(capacity: 16)
        buffer.writeBytes(Hello.encode(selfID).encoded)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        promise?.succeed(())
        promise = nil
    }

    private func fail(_ context: ChannelHandlerContext, _ error: any Error) {
        promise?.fail(error)
        promise = nil
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A connection that never became active (refused, timed out) ends here.
        promise?.fail(PeerRefusal(description: "the connection ended before the handshake"))
        promise = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(PeerRefusal(description: "the connection closed during the handshake"))
        promise = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context, error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Peers never send on the connection we dialled; anything that arrives is ignored.
    }

    typealias OutboundOut = ByteBuffer
}
