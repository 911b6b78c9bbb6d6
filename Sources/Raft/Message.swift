/// A message between members (or from the local node to itself, for proposals).
public struct Message: Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// Pre-vote request: "would you vote for me in term `term`?" (no state changes).
        case preVote
        case preVoteResponse
        case vote
        case voteResponse
        /// Entries after (`index`, `logTerm`), and the leader's commit index.
        case append
        /// Success: `index` is the last index the follower now matches. Rejection: `index` is
        /// the index that was rejected, `rejectHint`/`logTerm` help the leader skip back.
        case appendResponse
        case heartbeat
        case heartbeatResponse
        case snapshot
        /// A follower asks the leader for a read index (`context` names the request).
        case readIndex
        case readIndexResponse
        /// Leadership transfer: the target starts an election at once, skipping pre-vote.
        case timeoutNow
        /// A proposal forwarded by a follower to the leader.
        case propose
    }

    public var kind: Kind
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    /// The term of the entry at `index` (append, vote: last log term; rejections: hint term).
    public var logTerm: UInt64 = 0
    public var index: UInt64 = 0
    public var entries: [Entry] = []
    public var commit: UInt64 = 0
    public var reject: Bool = false
    public var rejectHint: UInt64 = 0
    public var snapshot: Snapshot? = nil
    /// Opaque request context (read requests; vote requests from a leadership transfer).
    public var context: [UInt8] = []

    public init(kind: Kind, from: NodeID, to: NodeID, term: UInt64) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
    }

    public var isResponse: Bool {
        switch kind {
        case .preVoteResponse, .voteResponse, .appendResponse, .heartbeatResponse, .readIndexResponse: return true
        default: return false
        }
    }
}

/// Metadata of a snapshot: the last index and term it covers and the configuration at that point.
public struct SnapshotMetadata: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var configuration: Configuration

    public init(index: UInt64, term: UInt64, configuration: Configuration) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}

/// A snapshot of the applied state up to `metadata.index`.
public struct Snapshot: Equatable, Sendable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}

/// The answer to a read request: once the applied index reaches `index`, a read reflects every
/// write committed before the request was made (linearizable).
public struct ReadState: Equatable, Sendable {
    public var index: UInt64
    public var context: [UInt8]
}
