import NIOCore
import Synchronization

/// What one listener allows before and between requests. Enforced on accepted TCP
/// connections, before TLS: a client that connects and then says nothing, or says it slowly,
/// costs a bounded number of file descriptors for a bounded time.
public struct ConnectionLimits: Sendable, Equatable {
    /// Open connections on this listener at most.
    public var maxConnections: Int
    /// Open connections from one source address at most.
    public var maxConnectionsPerAddress: Int
    /// From accept to the first request (the TLS handshake included); nil: no deadline.
    public var firstRequestTimeout: TimeAmount?
    /// With no request in progress, a connection is closed after this long; nil: never.
    public var idleTimeout: TimeAmount?
    /// From the first byte of a request to its last (HTTP: head and body); nil: no deadline.
    public var requestReadTimeout: TimeAmount?

    public init(
        maxConnections: Int, maxConnectionsPerAddress: Int, firstRequestTimeout: TimeAmount?,
        idleTimeout: TimeAmount?, requestReadTimeout: TimeAmount?
    ) {
        precondition(maxConnections >= 1 && maxConnectionsPerAddress >= 1 && maxConnectionsPerAddress <= maxConnections)
        self.maxConnections = maxConnections
        self.maxConnectionsPerAddress = maxConnectionsPerAddress
        self.firstRequestTimeout = firstRequestTimeout
        self.idleTimeout = idleTimeout
        self.requestReadTimeout = requestReadTimeout
    }
}

/// Counts and bounds the connections of one listener (see `ConnectionLimits`).
///
/// A connection is *unproven* until its first request: it has not shown that it holds a
/// certificate and speaks the protocol. When the listener (or the source address) is full,
/// the oldest unproven connection there is closed to make room, so that a flood of idle
/// sockets cannot keep a real client out; only when every connection there has made a request
/// is the new one refused.
public final class ConnectionGuard: Sendable {
    public let name: String
    public let limits: ConnectionLimits
    private let state = Mutex(State())

    /// What happened to this listener's connections so far.
    public struct Counts: Sendable, Equatable {
        public var open = 0
        /// Refused at accept: the listener or the address was full of proven connections.
        public var refused = 0
        /// Unproven connections closed to make room for a newer one.
        public var evicted = 0
        /// Closed for missing a deadline (first request, request read, or idle).
        public var timedOut = 0

        public init() {}
    }

    fileprivate struct State {
        var counts = Counts()
        var byChannel: [ObjectIdentifier: Tracked] = [:]
        var perAddress: [String: Int] = [:]
        /// Unproven connections in accept order (entries of closed or proven ones are skipped).
        var unproven: [ObjectIdentifier] = []
        var unprovenStart = 0
    }

    fileprivate struct Tracked {
        var channel: any Channel
        var address: String
        var proven: Bool
    }

    public init(name: String, limits: ConnectionLimits) {
        self.name = name
        self.limits = limits
    }

    public var counts: Counts { state.withLock { $0.counts } }

    /// Thrown by `admit` when there is no room; the child-channel initializer fails with it, and
    /// NIO closes the connection.
    public struct Full: Error, CustomStringConvertible {
        public var description: String
    }

    /// Call from the listener's child-channel initializer, on the channel's event loop: adds the
    /// guard as the first handler, or throws `Full` when there is no room for the connection.
    public func admit(_ channel: any Channel) throws {
        let address = Self.sourceAddress(channel)
        let key = ObjectIdentifier(channel)
        let (admitted, evict): (Bool, (any Channel)?) = state.withLock { state in
            var evict: (any Channel)?
            let addressFull = state.perAddress[address, default: 0] >= limits.maxConnectionsPerAddress
            if addressFull || state.byChannel.count >= limits.maxConnections {
                guard let oldest = state.oldestUnproven(at: addressFull ? address : nil) else {
                    state.counts.refused += 1
                    return (false, nil)
                }
                evict = state.forget(oldest)
                state.counts.evicted += 1
            }
            state.byChannel[key] = Tracked(channel: channel, address: address, proven: false)
            state.perAddress[address, default: 0] += 1
            state.unproven.append(key)
            state.counts.open = state.byChannel.count
            return (true, evict)
        }
        evict?.close(promise: nil)
        guard admitted else {
            throw Full(
                description:
                    "\(name) listener full: \(limits.maxConnections) connections, \(limits.maxConnectionsPerAddress) per address"
            )
        }
        channel.closeFuture.whenComplete { [self] _ in
            state.withLock { state in
                _ = state.forget(key)
                state.counts.open = state.byChannel.count
            }
        }
        try channel.pipeline.syncOperations.addHandler(
            ConnectionGuardHandler(guard: self, limits: limits), position: .first)
    }

    /// The connection made its first request: it is no longer evicted to make room.
    func markProven(_ channel: any Channel) {
        state.withLock { state in state.byChannel[ObjectIdentifier(channel)]?.proven = true }
    }

    func countTimeout() { state.withLock { $0.counts.timedOut += 1 } }

    private static func sourceAddress(_ channel: any Channel) -> String {
        guard let remote = channel.remoteAddress else { return "unknown" }
        return remote.ipAddress ?? "\(remote)"
    }

    // MARK: - Signals from the protocol above (on the channel's event loop)

    /// A request began on `channel` (HTTP: its head arrived whole; gRPC: a stream opened).
    public static func requestStarted(on channel: any Channel) {
        handler(of: channel)?.requestStarted()
    }

    /// The request's bytes have all arrived (HTTP: its end); its answer may take a while.
    public static func requestRead(on channel: any Channel) {
        handler(of: channel)?.requestRead()
    }

    /// A request ended (its answer was written, or its stream closed).
    public static func requestEnded(on channel: any Channel) {
        handler(of: channel)?.requestEnded()
    }

    private static func handler(of channel: any Channel) -> ConnectionGuardHandler? {
        try? channel.pipeline.syncOperations.handler(type: ConnectionGuardHandler.self)
    }
}

extension ConnectionGuard.State {
    /// The oldest unproven connection (from `address`, when given).
    mutating func oldestUnproven(at address: String?) -> ObjectIdentifier? {
        var position = unprovenStart
        while position < unproven.count {
            let key = unproven[position]
            guard let tracked = byChannel[key], !tracked.proven else {
                if position == unprovenStart { unprovenStart += 1 } // closed or proven: drop it from the front
                position += 1
                continue
            }
            if address == nil || tracked.address == address { return key }
            position += 1
        }
        compactUnproven()
        return nil
    }

    /// Stops tracking `key`; returns its channel if it was tracked.
    mutating func forget(_ key: ObjectIdentifier) -> (any Channel)? {
        guard let tracked = byChannel.removeValue(forKey: key) else { return nil }
        let left = perAddress[tracked.address, default: 1] - 1
        perAddress[tracked.address] = left > 0 ? left : nil
        compactUnproven()
        return tracked.channel
    }

    /// Keeps the accept-order list from growing past the connections it may name.
    private mutating func compactUnproven() {
        guard unproven.count > 64, unprovenStart * 2 > unproven.count || unproven.count > 4 * max(byChannel.count, 16)
        else { return }
        unproven = unproven[unprovenStart...].filter { byChannel[$0].map { !$0.proven } ?? false }
        unprovenStart = 0
    }
}

/// First in a connection's pipeline: runs its deadlines (first request, request read, idle)
/// and closes the connection when one passes.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    private let owner: ConnectionGuard
    private let limits: ConnectionLimits
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var inProgress = 0
    private var proven = false
    /// Bytes of a request are arriving and the request has not yet been read whole.
    private var reading = false

    init(guard owner: ConnectionGuard, limits: ConnectionLimits) {
        self.owner = owner
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        arm(limits.firstRequestTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The first bytes after an idle spell start a request: it must arrive whole in time.
        if proven && inProgress == 0 && !reading, let timeout = limits.requestReadTimeout {
            reading = true
            arm(timeout)
        }
        context.fireChannelRead(data)
    }

    func requestStarted() {
        if !proven, let context {
            proven = true
            owner.markProven(context.channel)
        }
        inProgress += 1
        if limits.requestReadTimeout != nil {
            reading = true
            arm(limits.requestReadTimeout)
        } else {
            disarm()
        }
    }

    func requestRead() {
        reading = false
        if inProgress > 0 { disarm() }
    }

    func requestEnded() {
        inProgress = max(0, inProgress - 1)
        guard inProgress == 0 else { return }
        reading = false
        arm(limits.idleTimeout)
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }

    private func arm(_ timeout: TimeAmount?) {
        disarm()
        guard let timeout, let context else { return }
        let owner = self.owner
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: timeout) {
            owner.countTimeout()
            channel.close(promise: nil)
        }
    }
}
