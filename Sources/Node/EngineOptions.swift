import Engine
import Raft

/// Everything the Raft thread, its loop and its core are configured with, derived from the
/// member's configuration in one place (`NodeConfig` holds the defaults an operator can change;
/// the fixed bounds are here, next to why they are what they are).
public struct EngineOptions: Sendable {
    public var tickMilliseconds: Int
    public var electionTicks: Int
    public var heartbeatTicks: Int
    /// Bytes of entries in one append message (see `MemberLimits.appendBytes`).
    public var maxAppendBytes: Int
    public var snapshotEveryEntries: UInt64
    public var requestTimeoutMilliseconds: Int
    /// Append messages in flight to one follower at most.
    public var maxInflightMessages = 256
    /// Entry bytes in flight to one follower at most (see `MemberLimits.inflightBytes`).
    public var maxInflightBytes: Int
    /// Proposed bytes not yet committed at most (see `MemberLimits.uncommittedBytes`).
    public var maxUncommittedBytes: Int
    /// Events taken per iteration at most, so that ticks and sends are never starved.
    public var maxEventsPerIteration = 4096
    /// Requests (proposals, reads, changes) waiting for the loop at most; more are refused
    /// with `busy` at once (see `EventInbox`).
    public var maxWaitingRequests = 20_000
    /// Batches of peer messages waiting at most; more are dropped (Raft sends again).
    public var maxWaitingMessageBatches = 10_000

    public init(config: NodeConfig) {
        tickMilliseconds = config.tickMilliseconds
        electionTicks = config.electionTicks
        heartbeatTicks = config.heartbeatTicks
        let limits = MemberLimits(config: config)
        precondition(limits.problems.isEmpty, "member limits do not fit together: \(limits.problems)")
        maxAppendBytes = limits.appendBytes
        maxUncommittedBytes = limits.uncommittedBytes
        maxInflightBytes = limits.inflightBytes
        snapshotEveryEntries = UInt64(config.snapshotEveryEntries)
        requestTimeoutMilliseconds = config.requestTimeoutMilliseconds
    }

    /// The core's configuration for member `id`.
    func raftConfig(id: NodeID) -> RaftConfig {
        var config = RaftConfig(id: id)
        config.electionTicks = electionTicks
        config.heartbeatTicks = heartbeatTicks
        config.maxMessageBytes = maxAppendBytes
        config.maxInflightMessages = maxInflightMessages
        config.maxInflightBytes = maxInflightBytes
        config.maxUncommittedBytes = maxUncommittedBytes
        // A follower's front forwards session writes to the leader in the log's own messages
        // (see `MemberLoop.propose`); other writes reach the leader through its client API.
        config.forwardProposals = true
        return config
    }

    var loopOptions: MemberLoop.Options {
        var options = MemberLoop.Options()
        options.snapshotEveryEntries = snapshotEveryEntries
        return options
    }
}
