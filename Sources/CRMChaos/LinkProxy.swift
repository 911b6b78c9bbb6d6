import NIOCore
import NIOPosix
import Synchronization

/// What the network does to the bytes one member sends another.
struct LinkCondition: Sendable, Equatable {
    /// Nothing gets through: the bytes vanish and the connection hangs (a black hole, not a reset).
    var blocked = false
    var delayMilliseconds = 0
    /// Each chunk waits a further 0 to `jitterMilliseconds` (order within a stream is kept, as TCP keeps it).
    var jitterMilliseconds = 0
    /// The chance that a chunk is lost. Over TCP a lost segment is resent: the stream stalls for
    /// a retransmission timeout (200 to 600 ms here) and everything behind it waits.
    var lossPercent = 0.0

    static let clear = LinkCondition()
}

/// The condition of every directed link between members; the drill changes it, the proxies read it.
final class NetworkFaults: Sendable {
    struct Link: Hashable, Sendable { var from, to: UInt64 }

    private let links = Mutex<[Link: LinkCondition]>([:])

    func condition(from: UInt64, to: UInt64) -> LinkCondition {
        links.withLock { $0[Link(from: from, to: to)] ?? .clear }
    }

    func set(_ condition: LinkCondition, from: UInt64, to: UInt64) {
        precondition(from != to, "a member has no link to itself")
        links.withLock { $0[Link(from: from, to: to)] = condition == .clear ? nil : condition }
    }

    func healAll() { links.withLock { $0 = [:] } }

    var anyFault: Bool { links.withLock { !$0.isEmpty } }
}

/// One proxied TCP connection, as the controller sees it: once bytes were dropped on it the
/// stream has a gap, so it is closed as soon as its links are clear again (as a connection
/// that timed out during a partition would be).
final class ProxiedConnection: Sendable {
    let from: UInt64
    let to: UInt64
    private let channels = Mutex<[any Channel]>([])
    private let poisoned = Atomic<Bool>(false)
    /// Bytes read and not yet written on (held back by a delay); bounded by `maxHeldBytes`.
    let heldBytes = Atomic<Int>(0)
    static let maxHeldBytes = 32 << 20

    init(from: UInt64, to: UInt64) {
        self.from = from
        self.to = to
    }

    func add(_ channel: any Channel) { channels.withLock { $0.append(channel) } }
    func poison() { poisoned.store(true, ordering: .relaxed) }
    var isPoisoned: Bool { poisoned.load(ordering: .relaxed) }

    func close() {
        for channel in channels.withLock({ $0 }) { channel.close(promise: nil) }
    }
}

/// Forwards the bytes read on one side of a proxied connection to the other, as the link's
/// condition says: dropped, delayed, or stalled as by a lost segment.
final class LinkRelay: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private let connection: ProxiedConnection
    private let from: UInt64
    private let to: UInt64
    private let faults: NetworkFaults
    private let partner: any Channel
    /// When the last chunk is due on the partner: no chunk is written before an earlier one.
    private var lastDelivery = NIODeadline.uptimeNanoseconds(0)

    init(connection: ProxiedConnection, from: UInt64, to: UInt64, faults: NetworkFaults, partner: any Channel) {
        self.connection = connection
        self.from = from
        self.to = to
        self.faults = faults
        self.partner = partner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let condition = faults.condition(from: from, to: to)
        if condition.blocked || connection.isPoisoned {
            connection.poison()
            return
        }
        var delay = Int64(condition.delayMilliseconds)
        if condition.jitterMilliseconds > 0 { delay += Int64.random(in: 0...Int64(condition.jitterMilliseconds)) }
        if condition.lossPercent > 0 && Double.random(in: 0..<100) < condition.lossPercent {
            delay += Int64.random(in: 200...600)
        }
        let now = NIODeadline.now()
        let due = max(now + .milliseconds(delay), lastDelivery)
        lastDelivery = due
        guard due > now else {
            partner.writeAndFlush(buffer, promise: nil)
            return
        }
        let bytes = buffer.readableBytes
        guard connection.heldBytes.add(bytes, ordering: .relaxed).newValue <= ProxiedConnection.maxHeldBytes else {
            connection.close()
            return
        }
        let partner = self.partner, connection = self.connection
        partner.eventLoop.scheduleTask(deadline: due) {
            connection.heldBytes.subtract(bytes, ordering: .relaxed)
            partner.writeAndFlush(buffer, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The proxies a drill inserts between members: for every ordered pair (i, j), a listener that
/// member i's config names as j's address (peer and client ports both), forwarding to j's real
/// port. Bytes read from i's side travel i→j, bytes from j's side j→i, each under its link's
/// condition, so that a partition, a one-way cut or a slow link is a change of `faults`.
final class LinkProxies: Sendable {
    let faults = NetworkFaults()
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let servers = Mutex<[any Channel]>([])
    private let connections = Mutex<[ObjectIdentifier: ProxiedConnection]>([:])

    /// Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`target`, as the link from → to.
    func listen(port: Int, forwardingTo target: Int, from: UInt64, to: UInt64) async throws {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { [self] inbound in
                accept(inbound, target: target, from: from, to: to)
                return inbound.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: port).get()
        servers.withLock { $0.append(server) }
    }

    private func accept(_ inbound: any Channel, target: Int, from: UInt64, to: UInt64) {
        let connection = ProxiedConnection(from: from, to: to)
        connection.add(inbound)
        let key = ObjectIdentifier(connection)
        connections.withLock { $0[key] = connection }
        inbound.closeFuture.whenComplete { [self] _ in
            connection.close()
            _ = connections.withLock { $0.removeValue(forKey: key) }
        }
        let faults = self.faults
        ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { outbound in
                connection.add(outbound)
                do {
                    try outbound.pipeline.syncOperations.addHandler(
                        LinkRelay(connection: connection, from: to, to: from, faults: faults, partner: inbound))
                    try inbound.pipeline.syncOperations.addHandler(
                        LinkRelay(connection: connection, from: from, to: to, faults: faults, partner: outbound))
                } catch {
                    return outbound.eventLoop.makeFailedFuture(error)
                }
                return outbound.eventLoop.makeSucceededVoidFuture()
            }
            .connect(host: "127.0.0.1", port: target)
            .whenComplete { result in
                switch result {
                case .success:
                    inbound.setOption(.autoRead, value: true).whenComplete { _ in inbound.read() }
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    /// Applies new link conditions, then closes every connection that lost bytes and whose
    /// links are now clear both ways.
    func update(_ change: (NetworkFaults) -> Void) {
        change(faults)
        for connection in connections.withLock({ Array($0.values) }) where connection.isPoisoned {
            if !faults.condition(from: connection.from, to: connection.to).blocked
                && !faults.condition(from: connection.to, to: connection.from).blocked
            {
                connection.close()
            }
        }
    }

    func shutdown() async {
        for server in servers.withLock({ $0 }) { try? await server.close() }
        for connection in connections.withLock({ Array($0.values) }) { connection.close() }
        try? await group.shutdownGracefully()
    }
}
