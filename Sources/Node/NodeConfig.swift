import CRMClient
import Foundation
import Raft
import Transport
import Yams

@_exported import struct CRMClient.Endpoint

/// Where one member can be reached.
public struct MemberEndpoints: Codable, Hashable, Sendable {
    public var id: NodeID
    public var peer: Endpoint
    public var client: Endpoint
    public var admin: Endpoint

    public init(id: NodeID, peer: Endpoint, client: Endpoint, admin: Endpoint) {
        self.id = id
        self.peer = peer
        self.client = client
        self.admin = admin
    }
}

/// The configuration of one `crm-node`, read from a YAML file (see `cluster/` for examples and
/// the README's configuration section for every key). `NodeConfig.load` refuses unknown keys,
/// missing files, unsafe permissions and inconsistent settings, each with a message that names
/// the key and says how to fix it.
public struct NodeConfig: Codable, Sendable, Equatable {
    public struct Listen: Codable, Sendable, Equatable {
        public var peer: Endpoint
        public var client: Endpoint
        public var admin: Endpoint
        /// Plain HTTP: /livez, /readyz, /metrics. Bind it to loopback or a monitoring network.
        public var health: Endpoint

        public init(peer: Endpoint, client: Endpoint, admin: Endpoint, health: Endpoint) {
            self.peer = peer
            self.client = client
            self.admin = admin
            self.health = health
        }
    }

    public struct Advertise: Codable, Sendable, Equatable {
        public var peer: Endpoint?
        public var client: Endpoint?
        public var admin: Endpoint?

        public init(peer: Endpoint? = nil, client: Endpoint? = nil, admin: Endpoint? = nil) {
            self.peer = peer
            self.client = client
            self.admin = admin
        }
    }

    public struct TLS: Codable, Sendable, Equatable {
        public var ca: String
        public var cert: String
        public var key: String
        /// How often the files are checked for changes (re-read without a restart).
        public var reloadIntervalSeconds: Int?
        /// Certificates refused although the CA signed them (see `DenyList`), re-read with the rest.
        public var denyFile: String?

        public init(ca: String, cert: String, key: String, reloadIntervalSeconds: Int? = nil, denyFile: String? = nil) {
            self.ca = ca
            self.cert = cert
            self.key = key
            self.reloadIntervalSeconds = reloadIntervalSeconds
            self.denyFile = denyFile
        }

        enum CodingKeys: String, CodingKey {
            case ca, cert, key
            case reloadIntervalSeconds = "reload_interval_seconds"
            case denyFile = "deny_file"
        }
    }

    public struct Timing: Codable, Sendable, Equatable {
        public var tickMilliseconds: Int?
        public var electionTicks: Int?
        public var heartbeatTicks: Int?
        /// How long a client request may wait (for commit, a read index, or the leader).
        public var requestTimeoutMilliseconds: Int?
        /// How long a graceful shutdown waits for a leadership handoff.
        public var shutdownHandoffMilliseconds: Int?

        public init(
            tickMilliseconds: Int? = nil, electionTicks: Int? = nil, heartbeatTicks: Int? = nil,
            requestTimeoutMilliseconds: Int? = nil, shutdownHandoffMilliseconds: Int? = nil
        ) {
            self.tickMilliseconds = tickMilliseconds
            self.electionTicks = electionTicks
            self.heartbeatTicks = heartbeatTicks
            self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
            self.shutdownHandoffMilliseconds = shutdownHandoffMilliseconds
        }

        enum CodingKeys: String, CodingKey {
            case tickMilliseconds = "tick_ms"
            case electionTicks = "election_ticks"
            case heartbeatTicks = "heartbeat_ticks"
            case requestTimeoutMilliseconds = "request_timeout_ms"
            case shutdownHandoffMilliseconds = "shutdown_handoff_ms"
        }
    }

    public struct Limits: Codable, Sendable, Equatable {
        public var maxMessageBytes: Int?
        public var maxSendQueueBytes: Int?
        /// Compact the Raft log into a snapshot once this many entries are applied past the last.
        public var snapshotEveryEntries: Int?
        public var maxSessions: Int?
        /// Sessions one client identity may hold; its oldest make room for its newest. Like
        /// max_sessions, the same on every member (the state machine applies it).
        public var maxSessionsPerClient: Int?

        public init(
            maxMessageBytes: Int? = nil, maxSendQueueBytes: Int? = nil, snapshotEveryEntries: Int? = nil,
            maxSessions: Int? = nil, maxSessionsPerClient: Int? = nil
        ) {
            self.maxMessageBytes = maxMessageBytes
            self.maxSendQueueBytes = maxSendQueueBytes
            self.snapshotEveryEntries = snapshotEveryEntries
            self.maxSessions = maxSessions
            self.maxSessionsPerClient = maxSessionsPerClient
        }

        enum CodingKeys: String, CodingKey {
            case maxMessageBytes = "max_message_bytes"
            case maxSendQueueBytes = "max_send_queue_bytes"
            case snapshotEveryEntries = "snapshot_every_entries"
            case maxSessions = "max_sessions"
            case maxSessionsPerClient = "max_sessions_per_client"
        }
    }

    /// What the health monitor measures against (every key optional; defaults below).
    public struct Health: Codable, Sendable, Equatable {
        public var checkIntervalMilliseconds: Int?
        /// NOSPACE when free space on the data directory's disk falls below this.
        public var diskReserveBytes: UInt64?
        /// NOSPACE when the store's files grow past this.
        public var storageQuotaBytes: UInt64?
        /// A synced write slower than this counts as slow; when every one in the window is
        /// slow, the disk is failing.
        public var fsyncSlowMilliseconds: Int?
        public var fsyncWindowMilliseconds: Int?
        public var maxApplyLag: UInt64?
        /// A loop (Raft or network) that wakes this late has stalled.
        public var stallMilliseconds: Int?
        /// A full integrity check of the store at start and then this often (0: at start only).
        public var verifyIntervalHours: Int?
        /// The health listener is plain HTTP without authentication: it binds to loopback unless
        /// this is true (then put it on a monitoring network only).
        public var allowNonLoopback: Bool?

        public init(
            checkIntervalMilliseconds: Int? = nil, diskReserveBytes: UInt64? = nil, storageQuotaBytes: UInt64? = nil,
            fsyncSlowMilliseconds: Int? = nil, fsyncWindowMilliseconds: Int? = nil, maxApplyLag: UInt64? = nil,
            stallMilliseconds: Int? = nil, verifyIntervalHours: Int? = nil, allowNonLoopback: Bool? = nil
        ) {
            self.checkIntervalMilliseconds = checkIntervalMilliseconds
            self.diskReserveBytes = diskReserveBytes
            self.storageQuotaBytes = storageQuotaBytes
            self.fsyncSlowMilliseconds = fsyncSlowMilliseconds
            self.fsyncWindowMilliseconds = fsyncWindowMilliseconds
            self.maxApplyLag = maxApplyLag
            self.stallMilliseconds = stallMilliseconds
            self.verifyIntervalHours = verifyIntervalHours
            self.allowNonLoopback = allowNonLoopback
        }

        enum CodingKeys: String, CodingKey {
            case checkIntervalMilliseconds = "check_interval_ms"
            case diskReserveBytes = "disk_reserve_bytes"
            case storageQuotaBytes = "storage_quota_bytes"
            case fsyncSlowMilliseconds = "fsync_slow_ms"
            case fsyncWindowMilliseconds = "fsync_window_ms"
            case maxApplyLag = "max_apply_lag"
            case stallMilliseconds = "stall_ms"
            case verifyIntervalHours = "verify_interval_hours"
            case allowNonLoopback = "allow_non_loopback"
        }
    }

    /// What a leader does when a member or its own disk fails.
    public struct Failover: Codable, Sendable, Equatable {
        /// Hand leadership over when this member's disk fails or fills (default true).
        public var handOffOnDiskFailure: Bool?
        /// A member silent this long is reported dead, with the commands to replace it.
        public var deadAfterSeconds: Int?
        /// Replace a dead voter with a spare automatically (default false).
        public var autoReplace: Bool?
        /// Members that are running (started with `join: true`) but not yet in the cluster.
        public var spares: [MemberEndpoints]?
        /// Never remove a voter when fewer than this many would remain (default 3).
        public var minVoters: Int?

        public init(
            handOffOnDiskFailure: Bool? = nil, deadAfterSeconds: Int? = nil, autoReplace: Bool? = nil,
            spares: [MemberEndpoints]? = nil, minVoters: Int? = nil
        ) {
            self.handOffOnDiskFailure = handOffOnDiskFailure
            self.deadAfterSeconds = deadAfterSeconds
            self.autoReplace = autoReplace
            self.spares = spares
            self.minVoters = minVoters
        }

        enum CodingKeys: String, CodingKey {
            case handOffOnDiskFailure = "hand_off_on_disk_failure"
            case deadAfterSeconds = "dead_after_seconds"
            case autoReplace = "auto_replace"
            case spares
            case minVoters = "min_voters"
        }
    }

    /// Bounds on the client-facing listeners (front gRPC and HTTP, the members' client API),
    /// enforced before authentication. The admin, health and peer listeners have small fixed
    /// bounds of their own.
    public struct Connections: Codable, Sendable, Equatable {
        public var maxPerListener: Int?
        /// Many clients behind one NAT share an address: keep this well above one client's needs.
        public var maxPerAddress: Int?
        /// From accept to the first request, the TLS handshake included.
        public var firstRequestMilliseconds: Int?
        /// With no request in progress, a connection is closed after this long.
        public var idleMilliseconds: Int?
        /// An HTTP request's head, and then its body, must each arrive within this time.
        public var requestReadMilliseconds: Int?
        /// Calls in progress on one gRPC connection at most.
        public var maxConcurrentStreams: Int?
        /// gRPC connections are closed gracefully after this long (clients reconnect, and
        /// connections move to new certificates and rebalance).
        public var maxAgeSeconds: Int?

        public init(
            maxPerListener: Int? = nil, maxPerAddress: Int? = nil, firstRequestMilliseconds: Int? = nil,
            idleMilliseconds: Int? = nil, requestReadMilliseconds: Int? = nil, maxConcurrentStreams: Int? = nil,
            maxAgeSeconds: Int? = nil
        ) {
            self.maxPerListener = maxPerListener
            self.maxPerAddress = maxPerAddress
            self.firstRequestMilliseconds = firstRequestMilliseconds
            self.idleMilliseconds = idleMilliseconds
            self.requestReadMilliseconds = requestReadMilliseconds
            self.maxConcurrentStreams = maxConcurrentStreams
            self.maxAgeSeconds = maxAgeSeconds
        }

        enum CodingKeys: String, CodingKey {
            case maxPerListener = "max_per_listener"
            case maxPerAddress = "max_per_address"
            case firstRequestMilliseconds = "first_request_ms"
            case idleMilliseconds = "idle_ms"
            case requestReadMilliseconds = "request_read_ms"
            case maxConcurrentStreams = "max_concurrent_streams"
            case maxAgeSeconds = "max_age_s"
        }
    }

    /// The front: the cluster's client entry on this node (gRPC and HTTP/JSON, mutual TLS).
    public struct Front: Codable, Sendable, Equatable {
        public var grpc: Endpoint
        public var http: Endpoint
        /// Requests per second each client identity may make (token bucket refill), and the burst.
        public var requestsPerSecond: Double?
        public var burst: Double?
        /// The whole time a front spends on one request, retries included.
        public var requestTimeoutMilliseconds: Int?
        /// How long shutdown waits for requests in progress.
        public var drainMilliseconds: Int?
        /// How often the front asks every member for its state.
        public var pollMilliseconds: Int?

        public init(
            grpc: Endpoint, http: Endpoint, requestsPerSecond: Double? = nil, burst: Double? = nil,
            requestTimeoutMilliseconds: Int? = nil, drainMilliseconds: Int? = nil, pollMilliseconds: Int? = nil
        ) {
            self.grpc = grpc
            self.http = http
            self.requestsPerSecond = requestsPerSecond
            self.burst = burst
            self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
            self.drainMilliseconds = drainMilliseconds
            self.pollMilliseconds = pollMilliseconds
        }

        enum CodingKeys: String, CodingKey {
            case grpc, http, burst
            case requestsPerSecond = "requests_per_second"
            case requestTimeoutMilliseconds = "request_timeout_ms"
            case drainMilliseconds = "drain_ms"
            case pollMilliseconds = "poll_ms"
        }
    }

    /// Logical backups: where they are written and the key that wraps each one's data key.
    public struct Backup: Codable, Sendable, Equatable {
        /// Directories (relative ones from the config's directory): a backup is written to the
        /// first and copied to the others; put them on other disks or mounts (3-2-1).
        public var targets: [String]
        /// The backup key-encryption key (64 hex characters, mode 0600; not the CRM key): with
        /// it alone a backup opens, but its personal fields stay sealed under subject keys that
        /// only the CRM key unwraps.
        public var keyFile: String
        /// The leader takes a backup when the newest in its targets is this old (0: only when
        /// asked; 0 to 168; 6 when not given). Two intervals without one raise BACKUP_STALE.
        public var everyHours: Int?
        /// Backups older than this are removed from each target, never a target's newest (1 to
        /// 3650; 35 when not given).
        public var keepDays: Int?
        /// The leader closes a log segment (committed entries since the last, for point-in-time
        /// recovery) this often (0: no segments; 5 to 3600; 60 when not given), or sooner at
        /// 64 MiB.
        public var archiveSeconds: Int?
        /// Entries a member's log keeps for an archiver that is behind (1000 to 10,000,000;
        /// 1,000,000 when not given); past it the log is compacted anyway and BACKUP_GAP raised.
        public var maxArchiveLagEntries: Int?

        public static let defaultEveryHours = 6
        public static let defaultKeepDays = 35
        public static let defaultArchiveSeconds = 60
        public static let defaultMaxArchiveLagEntries = 1_000_000

        public init(
            targets: [String], keyFile: String, everyHours: Int? = nil, keepDays: Int? = nil,
            archiveSeconds: Int? = nil, maxArchiveLagEntries: Int? = nil
        ) {
            self.targets = targets
            self.keyFile = keyFile
            self.everyHours = everyHours
            self.keepDays = keepDays
            self.archiveSeconds = archiveSeconds
            self.maxArchiveLagEntries = maxArchiveLagEntries
        }

        enum CodingKeys: String, CodingKey {
            case targets
            case keyFile = "key_file"
            case everyHours = "every_hours"
            case keepDays = "keep_days"
            case archiveSeconds = "archive_seconds"
            case maxArchiveLagEntries = "max_archive_lag_entries"
        }
    }

    /// The CRM: its key-encryption key, the same file on every member.
    public struct CRM: Codable, Sendable, Equatable {
        public var keyFile: String?
        /// Re-wrap batches (of up to 128 subject keys) the leader proposes a second after a
        /// key-set rotation: the job's share of the log (1 to 1024; 64 when not given).
        public var rewrapBatchesPerSecond: Int?
        /// When a read's audit entry must have committed: `sync` (the default: no personal
        /// data leaves before its entry is in the trail) or `async` (entries are written in
        /// the background; a read does not wait, so a crash may lose the newest).
        public var auditReads: AuditReads?
        /// Whether every user needs a second factor: `required` (the default: a user without
        /// one gets a session that may only enrol one) or `optional`.
        public var mfa: MFA?
        /// The longest time between audit checkpoints while entries are added (1 to 3600
        /// seconds; 60 when not given); one is made every 1,024 entries in any case.
        public var auditCheckpointSeconds: Int?
        /// A CSV file of networks and their places (`cidr,country,latitude,longitude`) for the
        /// new-country and impossible-travel alerts; without one those two are not raised.
        public var geoFile: String?
        /// Distinct data subjects whose personal data one user may read in an hour before the
        /// exfiltration guard stops their personal reads (1 to 1,000,000; 500 when not given).
        public var maxSubjectsPerHour: Int?
        /// Failed sign-ins across the cluster in a minute that raise AUTH_ATTACK (10 to
        /// 1,000,000; 300 when not given).
        public var authAttackFailuresPerMinute: Int?
        /// Under AUTH_ATTACK, block the application behind 90% or more of the failures
        /// (`crmctl clients unblock` lifts it). Off when not given.
        public var isolateClients: Bool?
        /// Days a field-history row is kept (1 to 36,500; 548, eighteen months, when not given).
        public var historyRetentionDays: Int?
        /// Audit entries a member queues for writing at most (100 to 1,000,000; 10,000 when not
        /// given): past it reads are refused UNAVAILABLE and AUDIT_BACKLOG is raised.
        public var auditQueueEntries: Int?

        public enum AuditReads: String, Codable, Sendable, Equatable {
            case sync, async
        }

        public enum MFA: String, Codable, Sendable, Equatable {
            case required, optional
        }

        public init(
            keyFile: String? = nil, rewrapBatchesPerSecond: Int? = nil, auditReads: AuditReads? = nil, mfa: MFA? = nil
        ) {
            self.keyFile = keyFile
            self.rewrapBatchesPerSecond = rewrapBatchesPerSecond
            self.auditReads = auditReads
            self.mfa = mfa
        }

        public static let defaultRewrapBatchesPerSecond = 64

        enum CodingKeys: String, CodingKey {
            case keyFile = "key_file"
            case rewrapBatchesPerSecond = "rewrap_batches_per_second"
            case auditReads = "audit_reads"
            case mfa
            case auditCheckpointSeconds = "audit_checkpoint_seconds"
            case geoFile = "geo_file"
            case maxSubjectsPerHour = "max_subjects_per_hour"
            case authAttackFailuresPerMinute = "auth_attack_failures_per_minute"
            case isolateClients = "isolate_clients"
            case historyRetentionDays = "history_retention_days"
            case auditQueueEntries = "audit_queue_entries"
        }

        public static let defaultMaxSubjectsPerHour = 500
        public static let defaultAuthAttackFailuresPerMinute = 300
    }

    public var id: NodeID
    public var dataDir: String
    public var masterKeyFile: String
    public var listen: Listen
    public var advertise: Advertise?
    /// The founding voters, this member included. A member that joins an existing cluster
    /// lists the members it knows and sets `join: true`; it is then added as a learner.
    public var members: [MemberEndpoints]
    public var join: Bool?
    public var tls: TLS
    /// Client identities (crm://client/<name>) allowed to use the admin API.
    public var admins: [String]?
    public var timing: Timing?
    public var limits: Limits?
    public var health: Health?
    public var failover: Failover?
    public var front: Front?
    public var connections: Connections?
    public var crm: CRM?
    public var backup: Backup?

    /// How often the leader closes a log segment (0: no `backup` section, or no segments).
    var archiveIntervalMillis: UInt64 {
        guard let backup else { return 0 }
        return UInt64(backup.archiveSeconds ?? Backup.defaultArchiveSeconds) * 1000
    }

    /// The leader's backup schedule (no interval without a `backup` section).
    var backupSchedule: BackupSchedule {
        BackupSchedule(
            everyMillis: UInt64(backup == nil ? 0 : backup?.everyHours ?? Backup.defaultEveryHours) * 3_600_000,
            keepMillis: UInt64(backup?.keepDays ?? Backup.defaultKeepDays) * 86_400_000)
    }

    public init(
        id: NodeID, dataDir: String, masterKeyFile: String, listen: Listen, members: [MemberEndpoints], tls: TLS,
        advertise: Advertise? = nil, join: Bool? = nil, admins: [String]? = nil, timing: Timing? = nil,
        limits: Limits? = nil, health: Health? = nil, failover: Failover? = nil, front: Front? = nil,
        connections: Connections? = nil, crm: CRM? = nil
    ) {
        self.id = id
        self.dataDir = dataDir
        self.masterKeyFile = masterKeyFile
        self.listen = listen
        self.members = members
        self.tls = tls
        self.advertise = advertise
        self.join = join
        self.admins = admins
        self.timing = timing
        self.limits = limits
        self.health = health
        self.failover = failover
        self.front = front
        self.connections = connections
        self.crm = crm
    }

    enum CodingKeys: String, CodingKey {
        case id, listen, advertise, members, join, tls, admins, timing, limits, health, failover, front, connections,
            crm, backup
        case dataDir = "data_dir"
        case masterKeyFile = "master_key_file"
    }

    // MARK: - Effective values

    /// Defaults for a LAN: a 50 ms tick, heartbeats every tick, elections after 10–20 ticks of
    /// silence (0.5–1 s), so that a lost leader is replaced within about a second.
    public var tickMilliseconds: Int { timing?.tickMilliseconds ?? 50 }
    public var electionTicks: Int { timing?.electionTicks ?? 10 }
    public var heartbeatTicks: Int { timing?.heartbeatTicks ?? 1 }
    public var requestTimeoutMilliseconds: Int { timing?.requestTimeoutMilliseconds ?? 5000 }
    public var shutdownHandoffMilliseconds: Int { timing?.shutdownHandoffMilliseconds ?? 3000 }
    public var maxMessageBytes: Int { limits?.maxMessageBytes ?? 16 << 20 }
    public var maxSendQueueBytes: Int { limits?.maxSendQueueBytes ?? 64 << 20 }
    public var snapshotEveryEntries: Int { limits?.snapshotEveryEntries ?? 10_000 }
    public var maxSessions: Int { limits?.maxSessions ?? 100_000 }
    public var maxSessionsPerClient: Int { limits?.maxSessionsPerClient ?? 1024 }
    public var tlsReloadIntervalSeconds: Int { tls.reloadIntervalSeconds ?? 30 }
    /// Deny by default: without `admins`, nobody may use the admin API.
    public var adminIdentities: Set<String> { Set(admins ?? []) }

    public var healthCheckIntervalMilliseconds: Int { health?.checkIntervalMilliseconds ?? 250 }
    public var diskReserveBytes: UInt64 { health?.diskReserveBytes ?? 512 << 20 }
    public var storageQuotaBytes: UInt64 { health?.storageQuotaBytes ?? 8 << 30 }
    public var fsyncSlowMilliseconds: Int { health?.fsyncSlowMilliseconds ?? 200 }
    public var fsyncWindowMilliseconds: Int { health?.fsyncWindowMilliseconds ?? 2000 }
    public var maxApplyLag: UInt64 { health?.maxApplyLag ?? 1000 }
    public var stallMilliseconds: Int { health?.stallMilliseconds ?? tickMilliseconds * electionTicks / 2 }
    public var verifyIntervalHours: Int { health?.verifyIntervalHours ?? 24 }
    public var handOffOnDiskFailure: Bool { failover?.handOffOnDiskFailure ?? true }
    public var deadAfterSeconds: Int { failover?.deadAfterSeconds ?? 300 }
    public var autoReplace: Bool { failover?.autoReplace ?? false }
    public var spares: [MemberEndpoints] { failover?.spares ?? [] }
    public var minVoters: Int { failover?.minVoters ?? 3 }
    /// Above what one front serves one client identity on this project's 2-core machine (6,900
    /// serializable gets/s over gRPC, 9,000 over HTTP/JSON): the default never throttles a
    /// single well-behaved application; operators with many tenants set it lower.
    public var frontRequestsPerSecond: Double { front?.requestsPerSecond ?? 20_000 }
    public var frontBurst: Double { front?.burst ?? max(frontRequestsPerSecond * 2, 1) }
    public var frontRequestTimeoutMilliseconds: Int { front?.requestTimeoutMilliseconds ?? requestTimeoutMilliseconds }
    public var frontDrainMilliseconds: Int { front?.drainMilliseconds ?? 5000 }
    public var frontPollMilliseconds: Int { front?.pollMilliseconds ?? 200 }
    public var electionTimeoutMilliseconds: Int { tickMilliseconds * electionTicks }
    public var maxConnectionsPerListener: Int { connections?.maxPerListener ?? 4096 }
    public var maxConnectionsPerAddress: Int { connections?.maxPerAddress ?? 1024 }
    public var firstRequestMilliseconds: Int { connections?.firstRequestMilliseconds ?? 5000 }
    public var connectionIdleMilliseconds: Int { connections?.idleMilliseconds ?? 300_000 }
    public var requestReadMilliseconds: Int { connections?.requestReadMilliseconds ?? 30_000 }
    public var maxConcurrentStreams: Int { connections?.maxConcurrentStreams ?? 256 }
    public var maxConnectionAgeSeconds: Int { connections?.maxAgeSeconds ?? 3600 }

    /// This member's own entry in `members`.
    public var selfEndpoints: MemberEndpoints { members.first { $0.id == id }! }

    public var tlsFiles: TLSFiles { TLSFiles(caBundle: tls.ca, certificate: tls.cert, privateKey: tls.key) }
}
