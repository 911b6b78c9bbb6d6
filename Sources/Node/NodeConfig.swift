import CRMClient
import Foundation
import Raft
import Transport
@_exported import struct CRMClient.Endpoint
import Yams

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
    }

    public struct Advertise: Codable, Sendable, Equatable {
        public var peer: Endpoint?
        public var client: Endpoint?
        public var admin: Endpoint?
    }

    public struct TLS: Codable, Sendable, Equatable {
        public var ca: String
        public var cert: String
        public var key: String
        /// How often the files are checked for changes (re-read without a restart).
        public var reloadIntervalSeconds: Int?

        enum CodingKeys: String, CodingKey {
            case ca, cert, key
            case reloadIntervalSeconds = "reload_interval_seconds"
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

        enum CodingKeys: String, CodingKey {
            case maxMessageBytes = "max_message_bytes"
            case maxSendQueueBytes = "max_send_queue_bytes"
            case snapshotEveryEntries = "snapshot_every_entries"
            case maxSessions = "max_sessions"
        }
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

    enum CodingKeys: String, CodingKey {
        case id, listen, advertise, members, join, tls, admins, timing, limits
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
    public var tlsReloadIntervalSeconds: Int { tls.reloadIntervalSeconds ?? 30 }
    public var adminIdentities: Set<String> { Set(admins ?? ["crmctl"]) }

    /// This member's own entry in `members`.
    public var selfEndpoints: MemberEndpoints { members.first { $0.id == id }! }

    public var tlsFiles: TLSFiles { TLSFiles(caBundle: tls.ca, certificate: tls.cert, privateKey: tls.key) }
}
