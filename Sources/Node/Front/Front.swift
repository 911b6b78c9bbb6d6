import CRMProto
import Dispatch
import GRPCCore
import KVStore
import Logging
import NIOPosix
import NIOSSL
import Raft
import Synchronization
import Transport

/// The front on this node: the cluster's client entry point, gRPC and HTTP/JSON over mutual
/// TLS. It routes every call for the whole cluster — writes to the leader, linearizable reads
/// spread over healthy members, serializable reads served here — and keeps serving while this
/// node's own member is down.
final class Front: Sendable {
    let kv: FrontKV
    private let grpc: Mutex<APIServers?>
    private let grpcListener: APIServers.Listener
    private let config: NodeConfig
    private let group: MultiThreadedEventLoopGroup
    private let http: FrontHTTPServer
    private let drainTimeout: Duration
    private let logger: Logger

    private init(
        kv: FrontKV, grpc: APIServers, grpcListener: APIServers.Listener, config: NodeConfig,
        group: MultiThreadedEventLoopGroup,
        http: FrontHTTPServer, drainTimeout: Duration, logger: Logger
    ) {
        self.kv = kv
        self.grpc = Mutex(grpc)
        self.grpcListener = grpcListener
        self.config = config
        self.group = group
        self.http = http
        self.drainTimeout = drainTimeout
        self.logger = logger
    }

    static func start(
        config: NodeConfig, settings: NodeConfig.Front, local: LocalKV, members: MemberClients,
        records: RecordsService, directory: DirectoryService, table: SharedRoutingTable,
        metrics: FrontMetrics, tls: ReloadingTLSContexts, guards: ListenerGuards, authorization: Authorization,
        memberState: @escaping @Sendable () -> Crm_V1_MemberStateResponse,
        group: MultiThreadedEventLoopGroup, logger: Logger
    ) async throws -> Front {
        var options = FrontRouter.Options()
        options.requestTimeoutMilliseconds = config.frontRequestTimeoutMilliseconds
        options.attemptTimeoutMilliseconds = max(2 * config.electionTimeoutMilliseconds, 1000)
        let router = FrontRouter(
            selfID: config.id, options: options, local: local, members: members, table: table, metrics: metrics,
            logger: logger)
        let kv = FrontKV(router: router, sessions: SessionPool(capacity: 256), logger: logger)
        let limiter = RateLimiter(rate: config.frontRequestsPerSecond, burst: config.frontBurst)
        let service = FrontGRPCService(
            front: kv, limiter: limiter, authorization: authorization, memberState: memberState, metrics: metrics)
        let grpcListener = APIServers.Listener(
            endpoint: settings.grpc, connections: guards.frontGRPC, services: [service, records, directory],
            callers: authorization.callers)
        let grpc = try await APIServers.start(config: config, listeners: [grpcListener], group: group, logger: logger)
        let api = FrontHTTPAPI(
            front: kv, records: FrontRecordsHTTP(records: records), auth: FrontAuthHTTP(directory: directory),
            limiter: limiter, metrics: metrics,
            clusterView: { Self.view(selfID: config.id, table: table, sessions: kv.sessions) })
        let maxBody = MemberLimits.httpBodyBytes
        let http: FrontHTTPServer
        do {
            http = try await FrontHTTPServer.start(
                host: settings.http.host, port: settings.http.port, tls: tls, api: api,
                maxBodyBytes: maxBody, connections: guards.frontHTTP, denyList: authorization.denyList,
                group: group, logger: logger)
        } catch {
            await grpc.stop() // all or nothing: the gRPC listener does not outlive a failed start
            throw error
        }
        logger.info(
            "front up",
            metadata: [
                "grpc": "\(settings.grpc)", "http": "\(settings.http)",
                "rate_per_client": "\(config.frontRequestsPerSecond)", "burst": "\(config.frontBurst)",
            ])
        return Front(
            kv: kv, grpc: grpc, grpcListener: grpcListener, config: config, group: group, http: http,
            drainTimeout: .milliseconds(config.frontDrainMilliseconds), logger: logger)
    }

    /// Restarts the gRPC listener so that it reads the TLS files again (after a TLS change);
    /// calls in progress finish on the old one.
    func restartGRPC() async {
        guard let old = grpc.withLock({ $0 }) else { return }
        await old.stop()
        do {
            let new = try await APIServers.start(
                config: config, listeners: [grpcListener], group: group, logger: logger)
            grpc.withLock { $0 = new }
        } catch {
            grpc.withLock { $0 = nil }
            logger.critical(
                "the front's gRPC listener did not restart after a TLS change", metadata: ["error": "\(error)"])
        }
    }

    /// Stops accepting calls, lets those in progress finish (up to `front.drain_ms`), closes
    /// the front's own sessions.
    func drain() async {
        logger.notice("front draining")
        async let http: Void = http.drain(timeout: drainTimeout)
        async let grpc: Void = grpc.withLock({ $0 })?.stop() ?? ()
        _ = await (http, grpc)
        await kv.closeSessions()
        logger.notice("front drained")
    }

    static func view(selfID: NodeID, table: SharedRoutingTable, sessions: SessionPool) -> FrontJSON.ClusterView {
        let now = DispatchTime.now().uptimeNanoseconds
        return table.withLock { table in
            FrontJSON.ClusterView(
                front: selfID, leader: table.leader,
                members: table.members.values.sorted { $0.id < $1.id }.map { member in
                    FrontJSON.MemberView(
                        id: member.id, readable: table.readable(member.id, now: now), ejected: member.ejection?.reason,
                        leader: member.id == table.leader, health: member.report?.health.state.rawValue,
                        reasons: member.report?.health.reasons ?? [],
                        alarms: member.report?.alarms.map(\.rawValue) ?? [],
                        latencyMilliseconds: member.latencyMicroseconds / 1000, inFlight: member.inFlight,
                        pollRoundTripMicroseconds: member.pollRoundTripMicroseconds)
                }, sessions: sessions.openCount)
        }
    }
}
