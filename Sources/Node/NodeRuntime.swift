import Backup
import CRM
import CRMProto
import Engine
import Foundation
import GRPCCore
import Identity
import KVStore
import Logging
import NIOCore
import NIOPosix
import Raft
import RaftStorage
import Sealing
import ServiceLifecycle
import Storage
import Synchronization
import Transport
import UnixSignals

/// One member, assembled from its config: storage, durable log, state machine, peer transport,
/// Raft loop, health monitor, integrity check, TLS reloader, API and health listeners and the
/// node's front. `run()` opens the store and builds every part (reporting the first problem
/// clearly), then runs the parts as services of one `ServiceGroup` (`services` holds their start
/// order; the group stops them in reverse, and a part that fails stops the others gracefully).
public final class NodeRuntime: @unchecked Sendable {
    public let config: NodeConfig
    let logger: Logger
    /// Client-facing work: the API, front and health listeners, and calls to other members.
    let group: MultiThreadedEventLoopGroup
    /// The peer transport alone, so that Raft traffic never waits behind client traffic on a
    /// busy event loop (a flood of reads once cost a leader its quorum that way).
    let peerGroup: MultiThreadedEventLoopGroup
    public private(set) var storage: StorageEngine?
    public private(set) var engine: RaftEngine?
    public private(set) var transport: PeerTransport?
    public private(set) var tls: ReloadingTLSContexts?
    /// Certificates refused although the CA signed them (`tls.deny_file`), re-read with the TLS files.
    private var denyList: DenyList?
    private var api: APIServers?
    private var apiListeners: [APIServers.Listener] = []
    /// The connection bounds of every listener but the peer one (the transport keeps its own).
    let guards: ListenerGuards
    private var members: MemberClients?
    private var health: HealthServer?
    public private(set) var monitor: HealthMonitor?
    private var poller: MemberPoller?
    private var front: Front?
    private var local: LocalKV?
    private var records: RecordsService?
    private var directoryService: DirectoryService?
    private var crm: CRMRecords?
    /// The leader's log archiver (with `backup.archive_seconds` > 0).
    private var archiver: LogArchiver?
    private var checkpoints: AuditCheckpoints?
    private var historyRetention: HistoryRetention?
    private var adminService: AdminService?
    private(set) var authorization: Authorization?
    private var frontMetrics: FrontMetrics?
    /// The running service group and its task (`start`/`stop`, the in-process form).
    private let running = Mutex<(group: ServiceGroup, task: Task<Void, any Error>)?>(nil)
    let routing = SharedRoutingTable()
    public let metrics = NodeMetrics()

    public init(config: NodeConfig, logger: Logger, eventLoopThreads: Int = 2) {
        self.config = config
        var logger = logger
        logger[metadataKey: "node"] = "\(config.id)"
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoopThreads)
        peerGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        guards = ListenerGuards(config: config)
        // Under overload the scheduler favours the Raft loop and the peer thread over client work.
        ThreadPriority.lower(group, by: ThreadPriority.clientNiceIncrement, logger: logger)
    }

    /// Opens storage and the log (bootstrapping a new cluster's founding entry on a first start)
    /// and builds every part of the member; nothing listens yet.
    func assemble() throws {
        try FileManager.default.createDirectory(
            atPath: config.dataDir, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        try Self.secureDataDirectory(config.dataDir, logger: logger)
        let masterKey = try FileMasterKeyProvider(path: config.masterKeyFile)
        let storage = try StorageEngine.open(path: config.dataDir + "/db", masterKey: masterKey, logger: logger)
        self.storage = storage
        // A start that fails before the engine runs closes the store here, on this thread: left
        // to whichever thread drops the last reference, the close raced the process's exit and
        // crashed inside RocksDB (seen after a damaged table refused the start).
        var assembled = false
        defer { if !assembled { storage.close() } }
        try DataFormat.check(storage)
        let log = try DurableLogStore.open(engine: storage, logger: logger)
        if log.lastIndex == 0 && log.hardState == HardState() && config.join != true {
            let founders = config.members.map(\.id).sorted()
            try log.bootstrap(founders: founders)
            logger.info("bootstrapped a new cluster", metadata: ["founders": "\(founders)"])
        }
        var kvOptions = ReplicatedKV.Options()
        kvOptions.maxSessions = config.maxSessions
        kvOptions.maxSessionsPerOwner = config.maxSessionsPerClient
        let kv = try ReplicatedKV(storage: storage, options: kvOptions, logger: logger)

        let tls: ReloadingTLSContexts
        do {
            tls = try ReloadingTLSContexts(files: config.tlsFiles, requiredIdentity: .member(config.id))
        } catch TLSMaterialError.wrongIdentity(_, let names, _) {
            throw ConfigError(
                path: config.tls.cert,
                problems: [
                    "tls.cert names \(names), but this member is crm://member/\(config.id); use member-\(config.id).pem"
                ])
        }
        self.tls = tls
        let denyList = try DenyList(path: config.tls.denyFile)
        self.denyList = denyList
        var transportOptions = PeerTransportOptions()
        MemberLimits(config: config).apply(to: &transportOptions)
        let transport = PeerTransport(
            selfID: config.id, tls: tls, group: peerGroup, options: transportOptions, denyList: denyList,
            snapshotSpool: try SnapshotSpool(directory: config.dataDir + "/snapshots"), logger: logger)
        self.transport = transport
        transport.setPeers(
            Dictionary(
                uniqueKeysWithValues: config.members.map {
                    ($0.id, PeerAddress(host: $0.peer.host, port: $0.peer.port))
                }))

        let engine = try RaftEngine(
            id: config.id, log: log, kv: kv, transport: transport, options: EngineOptions(config: config),
            metrics: metrics, randomSeed: UInt64.random(in: 1...UInt64.max), logger: logger)
        transport.setDelegate(engine)
        self.engine = engine
        engine.onMembershipApplied = { [weak self] status in self?.refreshPeers(status) }
        try assembleClientParts(engine: engine, storage: storage)
        assembled = true
    }

    /// The data directory is this user's and nobody else's, checked (and its mode fixed) at
    /// every start: an existing directory made by hand, or loosened since, would let other users
    /// read the store's files (keys are in clear there; values are sealed).
    static func secureDataDirectory(_ path: String, logger: Logger) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ConfigError(
                path: path, problems: ["data_dir: cannot stat \(path): \(String(cString: strerror(errno)))"])
        }
        guard info.st_uid == geteuid() else {
            throw ConfigError(
                path: path,
                problems: [
                    "data_dir: \(path) belongs to user \(info.st_uid), not to this process's user \(geteuid()); `chown -R` it to the node's user"
                ])
        }
        let mode = UInt32(info.st_mode) & 0o7777
        guard mode & 0o077 != 0 else { return }
        guard chmod(path, 0o700) == 0 else {
            throw ConfigError(
                path: path,
                problems: [
                    "data_dir: \(path) has mode \(String(mode, radix: 8)) and cannot be set to 700: \(String(cString: strerror(errno)))"
                ])
        }
        logger.warning(
            "data_dir was open to other users; set it to 0700",
            metadata: ["path": "\(path)", "was": "\(String(mode, radix: 8))"])
    }

    /// Every member's addresses: the config's, then those recorded through the log.
    public func memberDirectory() -> [NodeID: MemberEndpoints] {
        var directory = Dictionary(uniqueKeysWithValues: config.members.map { ($0.id, $0) })
        for (id, recorded) in (try? engine?.kv.memberDirectory()) ?? [:] {
            guard let peer = Endpoint(recorded.peer), let client = Endpoint(recorded.client),
                let admin = Endpoint(recorded.admin)
            else { continue }
            directory[id] = MemberEndpoints(id: id, peer: peer, client: client, admin: admin)
        }
        return directory
    }

    /// Points the transport and the forwarder at the current members (after a membership
    /// change or new addresses were applied): members of the configuration, and while this
    /// member is not yet in one (a joining learner), the members its config lists.
    func refreshPeers(_ status: EngineStatus) {
        let directory = memberDirectory()
        var peers: [NodeID: PeerAddress] = [:]
        for id in memberIDs(status) {
            guard let member = directory[id] else {
                logger.warning("member has no known address", metadata: ["member": "\(id)"])
                continue
            }
            peers[id] = PeerAddress(host: member.peer.host, port: member.peer.port)
        }
        transport?.setPeers(peers)
        members?.update(directory.mapValues(\.client))
        logger.info(
            "peers updated",
            metadata: ["voters": "\(status.voters.sorted())", "learners": "\(status.learners.sorted())"])
    }

    /// The parts that serve clients, operators and monitoring, built but not yet listening.
    private func assembleClientParts(engine: RaftEngine, storage: StorageEngine) throws {
        let authorization = Authorization(admins: config.adminIdentities, denyList: try denyList ?? DenyList(path: nil))
        self.authorization = authorization
        if config.adminIdentities.isEmpty {
            logger.notice("no `admins` in the config: the admin API refuses every caller (crmctl included)")
        }
        let members = MemberClients(config: config, logger: logger)
        self.members = members
        refreshPeers(engine.currentStatus)
        let frontMetrics = FrontMetrics(registry: metrics.registry)
        self.frontMetrics = frontMetrics
        let poller = MemberPoller(
            selfID: config.id, interval: .milliseconds(config.frontPollMilliseconds), table: routing, members: members,
            metrics: frontMetrics, ownState: { [weak self] in self?.memberState() ?? Crm_V1_MemberStateResponse() },
            memberIDs: { [weak self] in self?.memberIDs() ?? [] }, logger: logger)
        self.poller = poller
        let kek = CRMRecords.keyEncryptionKey(config)
        if case .failure(let problem) = kek {
            logger.notice("the CRM is unavailable on this member", metadata: ["reason": "\(problem)"])
        }
        let crmKeys = CRMKeyState(kek: kek, kv: engine.kv)
        let attacks = AuthAttackWatch(
            threshold: config.crm?.authAttackFailuresPerMinute ?? NodeConfig.CRM.defaultAuthAttackFailuresPerMinute,
            isolates: config.crm?.isolateClients ?? false)
        let backlog = AuditBacklog(capacity: config.crm?.auditQueueEntries ?? AuditRecorder.defaultQueueEntries)
        let backups = BackupStatus(everyMillis: UInt64(config.backupSchedule.everyMillis))
        let monitor = HealthMonitor(
            config: config, engine: engine, group: group, peers: { poller.observations() },
            crmKeyProblem: { crmKeys.problem() }, attacks: attacks, auditBacklog: backlog, backups: backups,
            logger: logger)
        self.monitor = monitor
        let local = LocalKV(
            engine: engine, members: members, gate: { ServingGate.from(monitor.snapshot, engine.currentStatus) },
            requestTimeoutMilliseconds: config.requestTimeoutMilliseconds, logger: logger)
        self.local = local
        let limiter = RateLimiter(rate: config.frontRequestsPerSecond, burst: config.frontBurst)
        let kv = KVService(
            local: local, authorization: authorization, limiter: limiter,
            memberState: { [weak self] in self?.memberState() ?? Crm_V1_MemberStateResponse() })
        let crm = CRMRecords(engine: engine, keys: crmKeys, local: local, routing: routing, logger: logger)
        engine.kv.onAuditDivergence { seq, why in monitor.raiseTamper("audit entry \(seq): \(why)") }
        checkpoints = AuditCheckpoints(
            crm: crm, member: config.id, keyFile: config.tls.key, certificateFile: config.tls.cert,
            caFile: config.tls.ca, everyMillis: UInt64(config.crm?.auditCheckpointSeconds ?? 60) * 1000,
            raiseTamper: { monitor.raiseTamper($0) })
        historyRetention = HistoryRetention(
            crm: crm, retentionDays: config.crm?.historyRetentionDays ?? FieldHistory.defaultRetentionDays)
        let identity = CRMIdentity(
            crm: crm, mfaRequired: (config.crm?.mfa ?? .required) == .required,
            geo: try config.crm?.geoFile.map { try GeoTable.load(path: $0) } ?? GeoTable(), attacks: attacks)
        let audit = AuditRecorder(
            crm: crm, members: members, waitsForReads: (config.crm?.auditReads ?? .sync) == .sync,
            maxSubjectsPerHour: config.crm?.maxSubjectsPerHour ?? NodeConfig.CRM.defaultMaxSubjectsPerHour,
            backlog: backlog)
        let directory = DirectoryService(
            identity: identity, members: members, authorization: authorization, limiter: limiter, audit: audit,
            metrics: metrics)
        self.directoryService = directory
        let records = RecordsService(directory: directory)
        self.records = records
        self.crm = crm
        let admin = AdminService(
            engine: engine, storage: storage, crm: crm, identity: identity, config: config,
            authorization: authorization, logger: logger,
            health: { monitor.snapshot }, peers: { poller.observations() },
            directory: { [weak self] in self?.memberDirectory() ?? [:] },
            raiseCorrupt: { monitor.raiseCorrupt($0) }, audit: audit, backupStatus: backups)
        adminService = admin
        if let backup = config.backup, config.archiveIntervalMillis > 0 {
            let retention = ArchiveRetention(
                kv: engine.kv,
                maxLagEntries: UInt64(backup.maxArchiveLagEntries ?? NodeConfig.Backup.defaultMaxArchiveLagEntries),
                status: backups, logger: logger)
            engine.retainForArchive { retention.keepFrom(compactingTo: $0) }
            archiver = LogArchiver(
                engine: engine, crm: crm, admin: admin, intervalMillis: config.archiveIntervalMillis, logger: logger)
        }
        apiListeners = [
            APIServers.Listener(
                endpoint: config.listen.client, connections: guards.client, services: [kv, records, directory],
                callers: authorization.callers),
            APIServers.Listener(
                endpoint: config.listen.admin, connections: guards.admin, services: [admin],
                callers: authorization.callers),
        ]
    }

    // MARK: - Services

    /// The member's parts in start order; the group stops them in the reverse order: the front
    /// drains first, the listeners close, and the Raft loop stops last, after handing leadership
    /// over. The TLS reloader comes last so that it stops before the listeners it restarts.
    func services(startup: StartupLatch) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        guard let engine, let transport, let storage, let monitor, let poller else {
            preconditionFailure("services() before assemble()")
        }
        let rewrapRate = config.crm?.rewrapBatchesPerSecond ?? NodeConfig.CRM.defaultRewrapBatchesPerSecond
        var services: [any Service] = [
            ComponentService(
                description: "raft", startup: startup, logger: logger,
                start: { [config, logger] in
                    try await transport.listen(host: config.listen.peer.host, port: config.listen.peer.port)
                    engine.start()
                    logger.info(
                        "member started",
                        metadata: [
                            "peer": "\(config.listen.peer)", "applied": "\(engine.kv.appliedIndex)",
                            "last_index": "\(engine.currentStatus.lastIndex)",
                        ])
                },
                stop: { [weak self] in
                    await self?.handOffLeadership()
                    engine.stop()
                    await transport.stop()
                    storage.close()
                }),
            ComponentService(
                description: "health monitor", startup: startup, logger: logger,
                start: {
                    monitor.check()
                    monitor.start()
                }, stop: { monitor.stop() }),
            PeriodicService(
                description: "integrity check", startup: startup, initialDelay: .zero,
                interval: config.verifyIntervalHours > 0 ? .seconds(config.verifyIntervalHours * 3600) : nil,
                work: { [logger, weak self] in
                    await Self.checkIntegrity(storage: storage, monitor: monitor, logger: logger)
                    // The whole audit trail is read too, on a thread of its own like the store.
                    if let checkpoints = self?.checkpoints {
                        _ = await onOwnThread(name: "audit-verify") { checkpoints.verifyChain() }
                    }
                }),
            PeriodicService(
                description: "audit checkpoints", startup: startup, initialDelay: .seconds(1), interval: .seconds(1),
                work: { [weak self] in await self?.checkpoints?.step() }),
            PeriodicService(
                description: "field history retention", startup: startup, initialDelay: .seconds(30),
                interval: .seconds(60), work: { [weak self] in await self?.historyRetention?.step() }),
            PeriodicService(
                description: "backup schedule", startup: startup, initialDelay: .seconds(15), interval: .seconds(60),
                work: { [weak self] in await self?.backupStep() }),
            PeriodicService(
                description: "log archiver", startup: startup, initialDelay: .seconds(5), interval: .seconds(5),
                work: { [weak self] in await self?.archiveStep() }),
            PeriodicService(
                description: "CRM re-wrap", startup: startup, initialDelay: .seconds(1), interval: .seconds(1),
                work: { [weak self] in await self?.crm?.rewrapStep(maxBatches: rewrapRate) }),
            ComponentService(
                description: "member poller", startup: startup, logger: logger, start: { poller.start() },
                stop: { await poller.stop() }),
            ComponentService(
                description: "API servers", startup: startup, logger: logger,
                start: { [weak self] in try await self?.startAPI() },
                stop: { [weak self] in await self?.api?.stop() }),
            ComponentService(
                description: "health server", startup: startup, logger: logger,
                start: { [weak self] in try await self?.startHealth(engine: engine, monitor: monitor) },
                stop: { [weak self] in await self?.health?.stop() }),
        ]
        if config.front != nil {
            services.append(
                ComponentService(
                    description: "front", startup: startup, logger: logger,
                    start: { [weak self] in try await self?.startFront() },
                    stop: { [weak self] in await self?.front?.drain() }))
        } else {
            logger.notice("no front configured (the `front` section): clients must call the members' client APIs")
        }
        let interval = Duration.seconds(config.tlsReloadIntervalSeconds)
        services.append(
            PeriodicService(
                description: "TLS reloader", startup: startup, initialDelay: interval, interval: interval,
                work: { [weak self] in await self?.reloadTLS() }))
        // A part that ends (or fails) on its own stops the member cleanly; the integrity check
        // may finish after its one run at start.
        startup.expect(services.map { "\($0)" })
        return services.map { service in
            let endsOnItsOwn = (service as? PeriodicService)?.runsOnce ?? false
            return .init(
                service: service, successTerminationBehavior: endsOnItsOwn ? .ignore : .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup)
        }
    }

    private func serviceGroup(signals: [UnixSignal]) throws -> (ServiceGroup, StartupLatch) {
        try assemble()
        let startup = StartupLatch()
        let services = services(startup: startup)
        var configuration = ServiceGroupConfiguration(services: services, logger: logger)
        configuration.gracefulShutdownSignals = signals
        // A stop is bounded: the front's drain, the handoff, and a few seconds for the rest;
        // past that the group cancels what is left (each part still closes what it opened).
        configuration.maximumGracefulShutdownDuration = .milliseconds(
            config.frontDrainMilliseconds + config.shutdownHandoffMilliseconds + 5000)
        return (ServiceGroup(configuration: configuration), startup)
    }

    /// Runs the member until one of `signals` (crm-node: SIGTERM, SIGINT) or `stop()` asks for a
    /// graceful shutdown; a part that fails stops the others gracefully, and this throws its error.
    public func run(gracefulShutdownSignals signals: [UnixSignal] = []) async throws {
        do {
            let (group, _) = try serviceGroup(signals: signals)
            try await group.run()
        } catch {
            await releaseThreads()
            throw error
        }
        await releaseThreads()
    }

    /// The in-process form (tests): runs the member's services in the background and returns once
    /// every one has started, or throws the first failure (having stopped the rest).
    public func start() async throws {
        let group: ServiceGroup
        let startup: StartupLatch
        do {
            (group, startup) = try serviceGroup(signals: [])
        } catch {
            await releaseThreads()
            throw error
        }
        let task = Task { try await group.run() }
        running.withLock { $0 = (group, task) }
        do {
            try await startup.wait()
        } catch {
            _ = try? await task.value
            await releaseThreads()
            throw error
        }
    }

    /// Stops what `start()` started: the services in reverse order, then the event loops.
    public func stop() async {
        guard let (group, task) = running.withLock({ $0.take() }) else { return }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        await releaseThreads()
    }

    /// After the services ended: the store is closed (also when the Raft loop never started) and
    /// the event loops are shut down.
    private func releaseThreads() async {
        members?.shutdown()
        storage?.close()
        // Stopped servers still hold promises on the event loops: let them go while the loops run
        // (released after the loops' shutdown, they failed those promises on dead loops).
        (api, front, health) = (nil, nil, nil)
        try? await group.shutdownGracefully()
        try? await peerGroup.shutdownGracefully()
        logger.info("member stopped")
    }

    private func startAPI() async throws {
        api = try await APIServers.start(config: config, listeners: apiListeners, group: group, logger: logger)
    }

    private func startFront() async throws {
        guard let settings = config.front, let tls, let local, let members, let frontMetrics, let authorization,
            let records, let directoryService
        else { return }
        front = try await Front.start(
            config: config, settings: settings, local: local, members: members,
            records: {
                var front = records; front.routesAroundItsMember = true; return front
            }(),
            directory: directoryService, table: routing,
            metrics: frontMetrics, tls: tls, guards: guards, authorization: authorization,
            memberState: { [weak self] in self?.memberState() ?? Crm_V1_MemberStateResponse() },
            group: group, logger: logger)
    }

    /// Re-reads the deny list and the TLS files; the API listeners restart with new certificates.
    private func reloadTLS() async {
        guard let denyList, let tls, let transport else { return }
        do {
            if try denyList.reloadIfChanged() {
                let entries = denyList.entries
                logger.notice(
                    "deny list changed; denied certificates are refused from now on",
                    metadata: [
                        "serials": "\(entries.serials.count)",
                        "identities": "\(entries.identities.map(\.description).sorted())",
                    ])
                transport.closeDenied()
            }
        } catch {
            logger.error(
                "deny list changed but cannot be used; keeping the previous one", metadata: ["error": "\(error)"])
        }
        do {
            guard try tls.reloadIfChanged() else { return }
            logger.notice("TLS files changed; new peer connections use them, the API listeners restart with them")
            await restartAPI()
        } catch {
            logger.error(
                "TLS files changed but cannot be used; keeping the previous ones", metadata: ["error": "\(error)"])
        }
    }

    /// Every member this node talks to and polls: those of the configuration, and while this
    /// member is not yet in one (a joining learner) those its config lists; itself included.
    func memberIDs(_ status: EngineStatus? = nil) -> Set<NodeID> {
        guard let status = status ?? engine?.currentStatus else { return [] }
        var ids = status.voters.union(status.learners)
        if !ids.contains(config.id) { ids.formUnion(config.members.map(\.id)) }
        return ids.union([config.id])
    }

    /// What this member says about itself to the fronts (`MemberState`).
    /// The leader's backup schedule, once a minute: a backup when one is due, then the
    /// targets' retention. On a follower it only notes that it does not lead.
    func backupStep() async {
        guard let engine, let admin = adminService, let backup = config.backup else { return }
        let now = WallClock.nowMillis()
        let leads = engine.currentStatus.role == .leader && local?.gate().refusal == nil
        admin.backupStatus.leading(leads, now: now)
        let listed = backup.targets.map { BackupStore.list($0) }
        if let drilled = try? BackupDrillMark.read(engine.kv) { admin.backupStatus.drilled(at: drilled) }
        if let newest = listed.flatMap(\.backups).compactMap(\.manifest).max(by: {
            $0.createdAtMillis < $1.createdAtMillis
        }) {
            admin.backupStatus.succeeded(at: newest.createdAtMillis, index: newest.appliedIndex)
        }
        guard leads else { return }
        let schedule = config.backupSchedule
        if schedule.isDue(newest: admin.backupStatus.newestMillis, now: now) {
            do {
                _ = try await admin.takeBackup(by: Caller(identity: .member(config.id)))
            } catch {
                logger.warning("scheduled backup failed; trying again in a minute", metadata: ["error": "\(error)"])
            }
        }
        for (target, found) in zip(backup.targets, listed) {
            for expired in schedule.expired(found.backups, now: now) {
                do {
                    try FileManager.default.removeItem(atPath: BackupStore.path(target, expired.id))
                    logger.notice("backup past backup.keep_days removed", metadata: ["backup": "\(expired.id)"])
                } catch {
                    logger.warning("an expired backup could not be removed", metadata: ["error": "\(error)"])
                }
            }
            for partial in found.partial
            where Self.olderThan(target + "/" + partial, BackupSchedule.partialMaxAgeMillis) {
                try? FileManager.default.removeItem(atPath: target + "/" + partial)
            }
            // Log segments before the oldest backup kept can no longer be replayed onto anything.
            if let oldest = BackupStore.list(target).backups.compactMap(\.manifest).map(\.appliedIndex).min() {
                let removed = LogSegments.prune(target, before: oldest + 1, now: now)
                if removed > 0 {
                    logger.notice("log segments before the oldest backup removed", metadata: ["segments": "\(removed)"])
                }
            }
        }
    }

    /// The leader's log archiver, every few seconds (it closes a segment each interval).
    func archiveStep() async {
        guard let engine, let archiver else { return }
        let leads = engine.currentStatus.role == .leader && local?.gate().refusal == nil
        await archiver.step(leads: leads, now: WallClock.nowMillis())
    }

    private static func olderThan(_ path: String, _ millis: UInt64) -> Bool {
        guard let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
        else { return false }
        return Date().timeIntervalSince(modified) * 1000 > Double(millis)
    }

    func memberState() -> Crm_V1_MemberStateResponse {
        guard let engine, let monitor else { return Crm_V1_MemberStateResponse() }
        let status = engine.currentStatus
        let snapshot = monitor.snapshot
        var state = Crm_V1_MemberStateResponse()
        state.memberID = status.id
        state.role = AdminService.role(status.role, learner: status.learners.contains(status.id))
        state.term = status.term
        state.leaderID = status.leader
        state.commitIndex = status.commitIndex
        state.appliedIndex = status.appliedIndex
        state.health = AdminService.proto(snapshot.report)
        state.alarms = snapshot.alarms.map(AdminService.proto)
        state.serving = ServingGate.from(snapshot, status).refusal == nil
        state.commandKinds = UInt32(KVCommand.highestKind)
        state.crmSchema = UInt32(CRMSchema.version)
        state.wallClockMs = WallClock.nowMillis()
        return state
    }

    /// One full integrity check of the store (at start, then every `health.verify_interval_hours`),
    /// on a thread of its own: it reads the whole store and must not hold up the threads that
    /// serve calls. Damage raises the CORRUPT alarm.
    private static func checkIntegrity(storage: StorageEngine, monitor: HealthMonitor, logger: Logger) async {
        let started = ContinuousClock.now
        let outcome = await onOwnThread(name: "integrity-check") { Result { try storage.verify() } }
        switch outcome {
        case nil:
            return // stopping: the check ends on its own when the store closes
        case .success(let report) where report.isClean:
            logger.info(
                "integrity check passed",
                metadata: ["values": "\(report.checked)", "took": "\(ContinuousClock.now - started)"])
        case .success(let report):
            monitor.raiseCorrupt(
                "integrity check found \(report.summary); `crmctl verify` lists them; repair: stop the member, move its data_dir aside, restart it empty with join: true and re-add it (it catches up by snapshot)"
            )
        case .failure(let error):
            monitor.raiseCorrupt("integrity check could not read the store: \(error)")
        }
    }

    private func startHealth(engine: RaftEngine, monitor: HealthMonitor) async throws {
        let metrics = self.metrics
        let transport = self.transport
        let tls = self.tls
        let guards = self.guards
        let probe = HealthServer.Probe(
            live: {
                let report = monitor.snapshot.report
                return (report.isLive, report.isLive ? "live" : "down: " + report.reasons.joined(separator: "; "))
            },
            ready: {
                let status = engine.currentStatus
                let snapshot = monitor.snapshot
                let alarms = snapshot.alarms.map { "alarm \($0.kind.rawValue): \($0.reason)" }
                if HealthReport.isReady(status) && snapshot.alarm(.corrupt) == nil && snapshot.alarm(.tamper) == nil {
                    let state =
                        snapshot.report.state == .healthy
                        ? "" : "; \(snapshot.report.state.rawValue): " + snapshot.report.reasons.joined(separator: "; ")
                    return (
                        true,
                        "ready: member \(status.id), leader \(status.leader), applied \(status.appliedIndex)" + state
                            + alarms.map { "; " + $0 }.joined()
                    )
                }
                let reasons =
                    snapshot.report.reasons.isEmpty
                    ? ["catching up (applied \(status.appliedIndex) of \(status.commitIndex))"]
                    : snapshot.report.reasons
                return (false, "not ready: " + reasons.joined(separator: "; ") + alarms.map { "; " + $0 }.joined())
            },
            metrics: {
                let status = engine.currentStatus
                metrics.refresh(
                    status, refusedConnections: transport?.refusedConnections.count ?? 0,
                    peerRoundTrips: status.roundTripMicroseconds.mapValues { .microseconds(Int64($0)) })
                metrics.refresh(monitor.snapshot)
                if let backlog = monitor.auditBacklog { metrics.refresh(auditQueue: backlog.counts) }
                if let backups = monitor.backups {
                    metrics.refresh(backupNewestMillis: backups.newestMillis, drillMillis: backups.drillMillis)
                }
                metrics.refresh(
                    connections: guards.all.map { ($0.name, $0.counts) } + [
                        ("peer", transport?.connectionCounts ?? .init())
                    ])
                if let material = tls?.material {
                    metrics.refresh(certificatesExpireAt: [
                        "member": material.certificateExpiresAt, "ca": material.earliestTrustRootExpiresAt,
                    ])
                }
                return metrics.registry.emitToBuffer()
            })
        health = try await HealthServer.start(
            host: config.listen.health.host, port: config.listen.health.port, probe: probe,
            connections: guards.health, group: group, logger: logger)
    }

    /// Restarts the client, admin and front gRPC listeners so that they read the TLS files again:
    /// calls in progress finish on the old listeners, new connections meet the new certificates.
    /// (The front's HTTP listener and the peer port take the current context per connection.)
    func restartAPI() async {
        await api?.stop()
        do {
            api = try await APIServers.start(config: config, listeners: apiListeners, group: group, logger: logger)
        } catch {
            logger.critical("API listeners did not restart after a TLS change", metadata: ["error": "\(error)"])
        }
        await front?.restartGRPC()
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
        let candidates = status.voters.filter {
            $0 != status.id && (status.lastContactMilliseconds[$0] ?? .max) < electionTimeout
        }
        guard
            let target = candidates.max(by: { (status.matchIndexes[$0] ?? 0, $1) < (status.matchIndexes[$1] ?? 0, $0) })
        else {
            logger.warning("no reachable voter to hand leadership to; stopping as leader")
            return
        }
        logger.notice(
            "handing leadership over before stopping",
            metadata: ["target": "\(target)", "match": "\(status.matchIndexes[target] ?? 0)"])
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
