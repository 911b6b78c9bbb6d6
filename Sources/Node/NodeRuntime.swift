import Foundation
import GRPCCore
import KVStore
import Logging
import NIOCore
import NIOPosix
import Raft
import RaftStorage
import Sealing
import Storage
import Transport

/// One member, assembled from its config: storage, durable log, state machine, peer transport
/// and Raft loop. `start()` opens everything in order and reports the first problem clearly;
/// `stop()` closes it all.
public final class NodeRuntime: @unchecked Sendable {
    public let config: NodeConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    public private(set) var storage: StorageEngine?
    public private(set) var engine: RaftEngine?
    public private(set) var transport: PeerTransport?
    public private(set) var tls: ReloadingTLSContexts?
    private var tlsReload: RepeatedTask?
    private var api: APIServers?
    private var apiServices: [(Endpoint, [any RegistrableRPCService])] = []
    private var forwarder: LeaderForwarder?
    private var health: HealthServer?
    public let metrics = NodeMetrics()

    public init(config: NodeConfig, logger: Logger, eventLoopThreads: Int = 2) {
        self.config = config
        var logger = logger
        logger[metadataKey: "node"] = "\(config.id)"
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoopThreads)
    }

    /// Opens storage and the log (bootstrapping a new cluster's founding entry on a first start),
    /// starts the peer listener and the Raft loop.
    public func start() async throws {
        try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let masterKey = try FileMasterKeyProvider(path: config.masterKeyFile)
        let storage = try StorageEngine.open(path: config.dataDir + "/db", masterKey: masterKey, logger: logger)
        self.storage = storage
        let log = try DurableLogStore.open(engine: storage, logger: logger)
        if log.lastIndex == 0 && log.hardState == HardState() && config.join != true {
            let founders = config.members.map(\.id).sorted()
            try log.bootstrap(founders: founders)
            logger.info("bootstrapped a new cluster", metadata: ["founders": "\(founders)"])
        }
        var kvOptions = ReplicatedKV.Options()
        kvOptions.maxSessions = config.maxSessions
        let kv = try ReplicatedKV(engine: storage, options: kvOptions, logger: logger)
        if kv.appliedIndex < log.snapshotMetadata.index {
            // The state machine is behind the log's snapshot (a restore was cut short).
            try kv.restore(from: log.snapshot().data, expectedIndex: log.snapshotMetadata.index)
        }

        let tls = try ReloadingTLSContexts(files: config.tlsFiles)
        guard tls.material.identity == .member(config.id) else {
            throw ConfigError(path: config.tls.cert, problems: [
                "tls.cert names \(tls.material.identity), but this member is crm://member/\(config.id); use member-\(config.id).pem",
            ])
        }
        self.tls = tls
        var transportOptions = PeerTransportOptions()
        transportOptions.maxFrameBytes = config.maxMessageBytes
        transportOptions.sendQueueBytes = config.maxSendQueueBytes
        let transport = PeerTransport(selfID: config.id, tls: tls, group: group, options: transportOptions, logger: logger)
        self.transport = transport
        transport.setPeers(Dictionary(uniqueKeysWithValues: config.members.map {
            ($0.id, PeerAddress(host: $0.peer.host, port: $0.peer.port))
        }))

        var options = RaftEngine.Options()
        options.tickMilliseconds = config.tickMilliseconds
        options.electionTicks = config.electionTicks
        options.heartbeatTicks = config.heartbeatTicks
        options.maxAppendBytes = min(config.maxMessageBytes / 2, 4 << 20)
        options.snapshotEveryEntries = UInt64(config.snapshotEveryEntries)
        options.requestTimeoutMilliseconds = config.requestTimeoutMilliseconds
        let engine = RaftEngine(id: config.id, log: log, kv: kv, transport: transport, options: options, metrics: metrics,
                                randomSeed: UInt64.random(in: 1...UInt64.max), logger: logger)
        transport.setDelegate(engine)
        self.engine = engine
        engine.onMembershipApplied = { [weak self] status in self?.refreshPeers(status) }
        try await transport.listen(host: config.listen.peer.host, port: config.listen.peer.port)
        refreshPeers(engine.currentStatus)
        engine.start()
        try await startAPI(engine: engine, storage: storage)
        tlsReload = group.next().scheduleRepeatedTask(initialDelay: .seconds(Int64(config.tlsReloadIntervalSeconds)),
                                                      delay: .seconds(Int64(config.tlsReloadIntervalSeconds))) { [weak self, logger] _ in
            do {
                guard try tls.reloadIfChanged() else { return }
                logger.notice("TLS files changed; new peer connections use them, the API listeners restart with them")
                Task { await self?.restartAPI() }
            } catch {
                logger.error("TLS files changed but cannot be used; keeping the previous ones", metadata: ["error": "\(error)"])
            }
        }
        logger.info("member started", metadata: [
            "peer": "\(config.listen.peer)", "applied": "\(kv.appliedIndex)", "last_index": "\(log.lastIndex)",
        ])
    }

    /// Every member's addresses: the config's, then those recorded through the log.
    public func memberDirectory() -> [NodeID: MemberEndpoints] {
        var directory = Dictionary(uniqueKeysWithValues: config.members.map { ($0.id, $0) })
        for (id, recorded) in (try? engine?.kv.memberDirectory()) ?? [:] {
            guard let peer = Endpoint(recorded.peer), let client = Endpoint(recorded.client), let admin = Endpoint(recorded.admin) else { continue }
            directory[id] = MemberEndpoints(id: id, peer: peer, client: client, admin: admin)
        }
        return directory
    }

    /// Points the transport and the forwarder at the current members (after a membership
    /// change or new addresses were applied): members of the configuration, and while this
    /// member is not yet in one (a joining learner), the members its config lists.
    func refreshPeers(_ status: EngineStatus) {
        let directory = memberDirectory()
        var ids = status.voters.union(status.learners)
        if !ids.contains(config.id) { ids.formUnion(config.members.map(\.id)) }
        var peers: [NodeID: PeerAddress] = [:]
        for id in ids {
            guard let member = directory[id] else {
                logger.warning("member has no known address", metadata: ["member": "\(id)"])
                continue
            }
            peers[id] = PeerAddress(host: member.peer.host, port: member.peer.port)
        }
        transport?.setPeers(peers)
        forwarder?.update(directory.mapValues(\.client))
        logger.info("peers updated", metadata: ["voters": "\(status.voters.sorted())", "learners": "\(status.learners.sorted())"])
    }

    private func startAPI(engine: RaftEngine, storage: StorageEngine) async throws {
        let authorization = Authorization(admins: config.adminIdentities)
        let forwarder = LeaderForwarder(config: config, logger: logger)
        self.forwarder = forwarder
        let kv = KVService(engine: engine, forwarder: forwarder, authorization: authorization,
                           requestTimeoutMilliseconds: config.requestTimeoutMilliseconds, logger: logger)
        let electionTimeout = UInt64(config.tickMilliseconds * config.electionTicks)
        let admin = AdminService(engine: engine, storage: storage, config: config, authorization: authorization, logger: logger,
                                 health: { HealthReport.assess(engine.currentStatus, electionTimeoutMilliseconds: electionTimeout) },
                                 directory: { [weak self] in self?.memberDirectory() ?? [:] })
        apiServices = [(config.listen.client, [kv]), (config.listen.admin, [admin])]
        api = try await APIServers.start(config: config, services: apiServices, group: group, logger: logger)
        try await startHealth(engine: engine)
    }

    private func startHealth(engine: RaftEngine) async throws {
        let electionTimeout = UInt64(config.tickMilliseconds * config.electionTicks)
        let metrics = self.metrics
        let transport = self.transport
        let probe = HealthServer.Probe(
            live: {
                let report = HealthReport.assess(engine.currentStatus, electionTimeoutMilliseconds: electionTimeout)
                return (report.isLive, report.isLive ? "live" : "down: " + report.reasons.joined(separator: "; "))
            },
            ready: {
                let status = engine.currentStatus
                if HealthReport.isReady(status) { return (true, "ready: member \(status.id), leader \(status.leader), applied \(status.appliedIndex)") }
                let report = HealthReport.assess(status, electionTimeoutMilliseconds: electionTimeout)
                return (false, "not ready: " + (report.reasons.isEmpty ? ["catching up (applied \(status.appliedIndex) of \(status.commitIndex))"] : report.reasons).joined(separator: "; "))
            },
            metrics: {
                let status = engine.currentStatus
                metrics.refresh(status, refusedConnections: transport?.refusedConnections.count ?? 0,
                                peerRoundTrips: status.roundTripMicroseconds.mapValues { .microseconds(Int64($0)) })
                return metrics.registry.emitToBuffer()
            })
        health = try await HealthServer.start(host: config.listen.health.host, port: config.listen.health.port, probe: probe,
                                              group: group, logger: logger)
    }

    /// Restarts the client and admin listeners so that they read the TLS files again: calls in
    /// progress finish on the old listeners, new connections meet the new certificates.
    func restartAPI() async {
        await api?.stop()
        do {
            api = try await APIServers.start(config: config, services: apiServices, group: group, logger: logger)
        } catch {
            logger.critical("API listeners did not restart after a TLS change", metadata: ["error": "\(error)"])
        }
    }

    /// Stops the listeners, the loop, the transport and storage (in that order).
    public func stop() async {
        tlsReload?.cancel()
        await health?.stop()
        await api?.stop()
        forwarder?.shutdown()
        engine?.stop()
        await transport?.stop()
        storage?.close()
        try? await group.shutdownGracefully()
        logger.info("member stopped")
    }
}

extension NodeRuntime {
    /// If this member leads, hands leadership to the most caught-up reachable voter and waits
    /// (up to the configured handoff time) for it to take over. Returns at once otherwise.
    public func handOffLeadership() async {
        guard let engine else { return }
        let status = engine.currentStatus
        guard status.role == .leader else { return }
        let electionTimeout = UInt64(config.tickMilliseconds * config.electionTicks)
        let candidates = status.voters.filter { $0 != status.id && (status.lastContactMilliseconds[$0] ?? .max) < electionTimeout }
        guard let target = candidates.max(by: { (status.matchIndexes[$0] ?? 0, $1) < (status.matchIndexes[$1] ?? 0, $0) }) else {
            logger.warning("no reachable voter to hand leadership to; stopping as leader")
            return
        }
        logger.notice("handing leadership over before stopping", metadata: ["target": "\(target)", "match": "\(status.matchIndexes[target] ?? 0)"])
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await engine.transferLeadership(to: target) }
                group.addTask {
                    try await Task.sleep(nanoseconds: UInt64(self.config.shutdownHandoffMilliseconds) * 1_000_000)
                    throw EngineError.timedOut
                }
                try await group.next()
                group.cancelAll()
            }
            logger.notice("leadership handed over", metadata: ["leader": "\(engine.currentStatus.leader)"])
        } catch {
            logger.warning("leadership handoff did not complete", metadata: ["error": "\(error)"])
        }
    }
}
