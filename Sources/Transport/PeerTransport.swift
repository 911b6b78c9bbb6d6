import BinaryCoding
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import Synchronization
import Wire

/// Limits and timings of the peer transport.
public struct PeerTransportOptions: Sendable {
    /// Largest frame accepted or sent; larger batches are split, a larger message is refused.
    public var maxFrameBytes = 16 << 20
    /// Bytes queued towards one peer before further messages are dropped (Raft sends again);
    /// dropping is reported so the leader stops pipelining to that peer.
    public var sendQueueBytes = 64 << 20
    public var connectTimeout = TimeAmount.seconds(2)
    /// A connection must finish its TLS handshake and hello within this time.
    public var handshakeTimeout = TimeAmount.seconds(5)
    public var reconnectDelayMin = TimeAmount.milliseconds(50)
    public var reconnectDelayMax = TimeAmount.seconds(2)
    public var snapshotChunkBytes = 1 << 20
    /// Largest snapshot a member accepts from its leader. It goes to a file in the snapshot
    /// directory as it arrives, so this bounds disk, not memory.
    public var maxSnapshotBytes: UInt64 = 1 << 40
    /// A snapshot that stops arriving for this long (no chunk) is dropped with its connection
    /// and its partial file; the leader sends it again.
    public var snapshotIdleTimeout = TimeAmount.seconds(30)
    /// Accepted connections before the hello. Members dial one connection each; the rest is
    /// room for reconnects. Unproven connections make way for newer ones (see `ConnectionGuard`).
    public var connectionLimits = ConnectionLimits(
        maxConnections: 64, maxConnectionsPerAddress: 16, firstRequestTimeout: nil,
        idleTimeout: nil, requestReadTimeout: nil)

    public init() {}
}

/// What the transport hands to the node.
public protocol PeerTransportDelegate: AnyObject, Sendable {
    /// Messages from `peer` (already checked to come from it and to be for this member).
    func peerTransport(received messages: [Message], from peer: NodeID)
    /// A snapshot finished going out to `peer`, or failed to.
    func peerTransport(snapshotTo peer: NodeID, delivered: Bool)
}

/// Mutual-TLS connections between members, carrying Raft messages in frames (see `Wire`).
///
/// Each member dials every other member and sends on that connection; it receives on the
/// connections the others dial. A connection is accepted only if the peer's certificate is
/// signed by the cluster CA and names `crm://member/<id>` for the id the peer says it is in its
/// hello, and that id is a member. Bad input closes only the connection it came on, with a log
/// line saying why.
public final class PeerTransport: Sendable {
    public let selfID: NodeID
    let options: PeerTransportOptions
    let tls: ReloadingTLSContexts
    let group: any EventLoopGroup
    let logger: Logger
    /// Certificates refused although the CA signed them (nil: none).
    let denyList: DenyList?
    /// Where snapshots from leaders are received (nil: this member refuses snapshots).
    public let snapshotSpool: SnapshotSpool?
    private let state: Mutex<State>

    private struct State {
        var addresses: [NodeID: PeerAddress] = [:]
        var outbound: [NodeID: OutboundPeer] = [:]
        var server: (any Channel)?
        /// Accepted connections, by channel identity, so that `stop` can close them.
        var inbound: [ObjectIdentifier: any Channel] = [:]
        /// The one accepted connection of each member that said hello.
        var inboundByPeer: [NodeID: any Channel] = [:]
        var stopped = false
    }

    /// Holds the delegate weakly (the node owns the transport and is its delegate).
    final class DelegateBox: @unchecked Sendable {
        private let lock = Mutex(())
        private weak var value: (any PeerTransportDelegate)?
        init(_ delegate: (any PeerTransportDelegate)?) { value = delegate }
        var current: (any PeerTransportDelegate)? { lock.withLock { _ in value } }
        func set(_ delegate: any PeerTransportDelegate) { lock.withLock { _ in value = delegate } }
    }

    private let box: DelegateBox
    /// The listener's connection bounds (set by `listen`).
    private let connections = Mutex<ConnectionGuard?>(nil)

    /// What the listener's connection bounds did so far (nil before `listen`).
    public var connectionCounts: ConnectionGuard.Counts? { connections.withLock { $0?.counts } }
    /// Accepted connections closed for a bad handshake or bad input, and the latest reasons.
    private let refusals = Mutex(RefusalLog())

    public struct RefusalLog: Sendable {
        public private(set) var count = 0
        /// The most recent reasons, newest last (at most `kept`).
        public private(set) var recent: [String] = []
        static let kept = 32

        mutating func record(_ reason: String) {
            count += 1
            recent.append(reason)
            if recent.count > Self.kept { recent.removeFirst() }
        }
    }

    public var refusedConnections: RefusalLog { refusals.withLock { $0 } }

    func recordRefusal(_ reason: String) { refusals.withLock { $0.record(reason) } }

    public init(
        selfID: NodeID, tls: ReloadingTLSContexts, group: any EventLoopGroup,
        delegate: (any PeerTransportDelegate)? = nil,
        options: PeerTransportOptions = PeerTransportOptions(), denyList: DenyList? = nil,
        snapshotSpool: SnapshotSpool? = nil, logger: Logger = Logger(label: "crm.peer")
    ) {
        precondition(selfID != 0)
        self.selfID = selfID
        self.denyList = denyList
        self.snapshotSpool = snapshotSpool
        self.tls = tls
        self.group = group
        self.options = options
        var logger = logger
        logger[metadataKey: "node"] = "\(selfID)"
        self.logger = logger
        box = DelegateBox(delegate)
        state = Mutex(State())
    }

    /// Sets who receives what arrives (held weakly).
    public func setDelegate(_ delegate: any PeerTransportDelegate) { box.set(delegate) }

    // MARK: - Members

    /// Sets where each peer listens (this member's own entry, if present, is ignored).
    /// Connections to removed peers are closed; changed addresses are dialled anew.
    /// Accepted connections of members no longer listed are closed too: a removed member keeps
    /// no way in.
    public func setPeers(_ addresses: [NodeID: PeerAddress]) {
        let (closing, removed): ([OutboundPeer], [(NodeID, any Channel)]) = state.withLock { state in
            var closing: [OutboundPeer] = []
            for (id, peer) in state.outbound where addresses[id] != peer.address {
                closing.append(peer)
                state.outbound[id] = nil
            }
            state.addresses = addresses.filter { $0.key != selfID }
            let removed = state.inboundByPeer.filter { addresses[$0.key] == nil }
            for (id, _) in removed { state.inboundByPeer[id] = nil }
            return (closing, removed.map { ($0.key, $0.value) })
        }
        for peer in closing { peer.close() }
        for (id, channel) in removed {
            logger.info("closing the connection of a removed member", metadata: ["peer": "\(id)"])
            channel.close(promise: nil)
        }
    }

    /// Closes accepted connections whose certificate is now denied (after the deny list changed).
    public func closeDenied() {
        guard let denyList else { return }
        let channels = state.withLock { Array($0.inboundByPeer) }
        for (peer, channel) in channels {
            channel.eventLoop.execute { [logger] in
                guard
                    let certificate = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
                        .peerCertificate,
                    let refusal = denyList.refusal(
                        serial: certificate.serialNumber, identity: PeerIdentity(certificate: certificate))
                else { return }
                logger.warning(
                    "closing a member's connection: its certificate is denied",
                    metadata: ["peer": "\(peer)", "reason": "\(refusal)"])
                channel.close(promise: nil)
            }
        }
    }

    /// `channel` is `peer`'s connection from now on; an older one of the same member is closed
    /// (a member dials one connection; a second means it reconnected, or someone replays its
    /// certificate). False if `peer` is no longer a member.
    func registerInbound(_ channel: any Channel, peer: NodeID) -> Bool {
        let previous: (any Channel)?? = state.withLock { state in
            guard state.addresses[peer] != nil else { return .none }
            defer { state.inboundByPeer[peer] = channel }
            return .some(state.inboundByPeer[peer])
        }
        guard let previous else { return false }
        if let previous, previous !== channel {
            logger.info("a member connected again; closing its older connection", metadata: ["peer": "\(peer)"])
            previous.close(promise: nil)
        }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { state in
                if state.inboundByPeer[peer] === channel { state.inboundByPeer[peer] = nil }
            }
        }
        return true
    }

    /// Whether `id` may connect to this member.
    func isMember(_ id: NodeID) -> Bool { state.withLock { $0.addresses[id] != nil } }

    // MARK: - Listening

    /// Starts listening for peers on `host`:`port` (port 0: any free port); returns the bound port.
    @discardableResult
    public func listen(host: String, port: Int) async throws -> Int {
        let connections = ConnectionGuard(name: "peer", limits: options.connectionLimits)
        self.connections.withLock { $0 = connections }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                track(inbound: channel)
                return channel.eventLoop.makeCompletedFuture {
                    try connections.admit(channel)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: tls.server))
                    try sync.addHandler(InboundPeerHandler(transport: self))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        state.withLock { $0.server = channel }
        let bound = channel.localAddress?.port ?? port
        logger.info("peer transport listening", metadata: ["address": "\(host):\(bound)"])
        return bound
    }

    private func track(inbound channel: any Channel) {
        let key = ObjectIdentifier(channel)
        let accepted = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.inbound[key] = channel
            return true
        }
        guard accepted else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [self] _ in _ = state.withLock { $0.inbound.removeValue(forKey: key) } }
    }

    /// Stops listening and closes every connection, dialled and accepted.
    public func stop() async {
        let (server, peers, inbound): ((any Channel)?, [OutboundPeer], [any Channel]) = state.withLock { state in
            state.stopped = true
            defer { state.outbound = [:] }
            return (state.server, Array(state.outbound.values), Array(state.inbound.values))
        }
        for peer in peers { peer.close() }
        try? await server?.close()
        for channel in inbound { try? await channel.close() }
    }

    // MARK: - Sending

    /// Sends messages to their peers. Returns the peers some of whose messages could not be
    /// queued (not connected, or the queue is full): the caller reports them unreachable.
    @discardableResult
    public func send(_ messages: [Message]) -> Set<NodeID> {
        var byPeer: [NodeID: [Message]] = [:]
        for message in messages where message.to != selfID { byPeer[message.to, default: []].append(message) }
        var unreachable: Set<NodeID> = []
        for (id, batch) in byPeer {
            guard let peer = outbound(id) else {
                unreachable.insert(id)
                for message in batch where message.snapshot != nil { snapshotSent(to: id, delivered: false) }
                continue
            }
            if !peer.enqueue(frames(for: batch)) { unreachable.insert(id) }
        }
        return unreachable
    }

    /// Frames for a batch: message batches within the frame limit, and each snapshot message
    /// in a frame of its own, which starts the streaming of its data once written.
    func frames(for messages: [Message]) -> [OutboundFrame] {
        var frames: [OutboundFrame] = []
        var pending: [Message] = []
        var pendingBytes = 0
        func flush() {
            guard !pending.isEmpty else { return }
            frames.append(OutboundFrame(frame: Frame(type: .raftMessages, payload: RaftMessageCoding.encode(pending))))
            pending = []
            pendingBytes = 0
        }
        for message in messages {
            let size = 96 + message.context.count + message.entries.reduce(0) { $0 + $1.data.count + 24 }
            if let snapshot = message.snapshot {
                flush()
                frames.append(
                    OutboundFrame(
                        frame: Frame(type: .raftMessages, payload: RaftMessageCoding.encode([message])),
                        snapshot: snapshot))
                continue
            }
            guard size + 64 <= options.maxFrameBytes else {
                logger.error(
                    "dropping a message larger than the frame limit",
                    metadata: [
                        "kind": "\(message.kind.rawValue)", "to": "\(message.to)", "bytes": "\(size)",
                        "limit": "\(options.maxFrameBytes)",
                    ])
                continue
            }
            if pendingBytes + size + 64 > options.maxFrameBytes { flush() }
            pending.append(message)
            pendingBytes += size
        }
        flush()
        return frames
    }

    private func outbound(_ id: NodeID) -> OutboundPeer? {
        state.withLock { state in
            guard !state.stopped, let address = state.addresses[id] else { return nil }
            if let existing = state.outbound[id] { return existing }
            let peer = OutboundPeer(id: id, address: address, transport: self, eventLoop: group.next())
            state.outbound[id] = peer
            peer.connect()
            return peer
        }
    }

    // MARK: - Delivery (from channels)

    func deliver(_ messages: [Message], from peer: NodeID) {
        box.current?.peerTransport(received: messages, from: peer)
    }

    func snapshotSent(to peer: NodeID, delivered: Bool) {
        box.current?.peerTransport(snapshotTo: peer, delivered: delivered)
    }
}

/// Where a peer listens.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// A frame queued for a peer; one that announces a snapshot starts streaming its data.
struct OutboundFrame {
    var frame: Frame
    var snapshot: Snapshot?
}

/// The hello frame: the member id the dialler claims (checked against its certificate).
enum Hello {
    /// The only frame accepted before the hello is this small: a client certificate (the CA
    /// signs those too) cannot make a member buffer a large frame before it says who it is.
    static let payloadBytes = 8

    static func encode(_ id: NodeID) -> Frame {
        var writer = BinaryWriter()
        writer.u64(id)
        return Frame(type: .hello, payload: writer.bytes)
    }

    static func decode(_ frame: Frame) throws(WireError) -> NodeID {
        var reader = BinaryReader(frame.payload)
        guard frame.type == .hello, let id = reader.u64(), id != 0, reader.isAtEnd else {
            throw .malformed("the first frame must be a hello naming a member id")
        }
        return id
    }
}
