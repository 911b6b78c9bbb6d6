import KVStore
import Raft

/// Why the engine could not do what was asked. Each case says what the caller can do.
public enum EngineError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This member does not lead; `leaderHint` is the leader it knows of (0: none yet).
    case notLeader(leaderHint: NodeID)
    /// The request did not complete in time; a write's outcome is then unknown.
    case timedOut
    /// Leadership changed before the write committed: it may or may not take effect. Retry
    /// it in the same session with the same sequence number, which applies it at most once.
    case outcomeUnknown
    /// Too much is waiting to commit, or a membership change or leadership transfer is in
    /// progress: retry shortly.
    case busy(String)
    case invalid(String)
    /// The storage failed; the member stops serving.
    case storage(String)
    case stopped

    public var description: String {
        switch self {
        case .notLeader(let hint):
            return hint == 0
                ? "no leader is known yet; retry shortly" : "this member does not lead; member \(hint) does"
        case .timedOut:
            return
                "the request timed out; for a write the outcome is unknown (retry it in the same session to apply it at most once)"
        case .outcomeUnknown:
            return
                "leadership changed before the write committed; retry it in the same session with the same sequence number"
        case .busy(let why): return "busy: \(why); retry shortly"
        case .invalid(let why): return why
        case .storage(let why): return "storage failure: \(why)"
        case .stopped: return "the member is shutting down"
        }
    }
}

/// What the engine shows of itself, refreshed after every loop iteration.
public struct EngineStatus: Sendable, Equatable {
    public var id: NodeID
    public var role: Role = .follower
    public var term: UInt64 = 0
    public var leader: NodeID = 0
    public var commitIndex: UInt64 = 0
    public var appliedIndex: UInt64 = 0
    /// The state machine's log clock (the largest proposal stamp applied).
    public var logClockMillis: UInt64 = 0
    public var firstIndex: UInt64 = 0
    public var lastIndex: UInt64 = 0
    public var snapshotIndex: UInt64 = 0
    public var voters: Set<NodeID> = []
    public var learners: Set<NodeID> = []
    /// The leader's view of each member's match index (empty unless leader).
    public var matchIndexes: [NodeID: UInt64] = [:]
    /// Milliseconds since each peer was last heard from.
    public var lastContactMilliseconds: [NodeID: UInt64] = [:]
    /// The latest heartbeat round trip to each peer, in microseconds (leader only).
    public var roundTripMicroseconds: [NodeID: UInt64] = [:]
    public var snapshotsSent = 0
    public var snapshotsInstalled = 0
    public var compactions = 0
    /// Session writes this member forwarded to the leader as a follower.
    public var forwardedWrites = 0
    /// Peer messages the core refused as no honest member would send them.
    public var refusedPeerMessages = 0
    /// Requests refused with `busy` because too many were waiting for the loop.
    public var refusedBusyRequests = 0
    /// Batches of peer messages dropped because too many were waiting for the loop.
    public var droppedMessageBatches = 0
    /// Set when the storage failed and the engine stopped.
    public var failure: String?

    public init(id: NodeID) { self.id = id }
}

/// The outcome of a proposal: the state machine's answer, or nil for entries it does not
/// interpret (membership changes).
public struct ProposalResult: Sendable, Equatable {
    public var index: UInt64
    public var outcome: KVOutcome?
}
