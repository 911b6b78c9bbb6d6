/// Settings of one consensus member. Times are in ticks: the member calls `tick()` at a fixed
/// interval (`timing.tick_ms`, 50 ms by default), so `electionTicks` 10 is 0.5–1 s. A member's
/// values come from `EngineOptions.raftConfig(id:)`; the defaults here serve tests.
public struct RaftConfig: Sendable {
    public var id: NodeID
    /// A follower that hears nothing from a leader for a random time in
    /// [electionTicks, 2 × electionTicks) starts an election.
    public var electionTicks: Int = 10
    /// The leader sends heartbeats every `heartbeatTicks`.
    public var heartbeatTicks: Int = 1
    /// Largest append message, in entry bytes (at least one entry is always sent).
    public var maxMessageBytes: Int = 1 << 20
    /// Appends in flight to one follower before the leader waits for answers.
    public var maxInflightMessages: Int = 256
    /// Entry bytes in flight to one follower before the leader waits for answers (0: no bound;
    /// one append always goes).
    public var maxInflightBytes: Int = 16 << 20
    /// Proposals are refused once this many bytes are appended but not committed (0: no bound).
    public var maxUncommittedBytes: Int = 64 << 20
    /// Committed entry bytes handed out per `Ready` (at least one entry).
    public var maxApplyBytesPerReady: Int = 16 << 20
    /// Ask "would you vote for me?" before raising the term, so that a node rejoining after a
    /// partition does not depose a working leader.
    public var preVote = true
    /// A leader steps down when it has not heard from a quorum within an election timeout, and
    /// followers that recently heard from a leader ignore vote requests.
    public var checkQuorum = true
    /// Followers forward proposals to the leader (otherwise they refuse with a leader hint).
    public var forwardProposals = true
    /// Lease reads: nil (the default) answers every read by ReadIndex, which costs a heartbeat
    /// round to a quorum and assumes nothing about clocks. When set, the leader answers a read
    /// at once while a quorum has acknowledged a heartbeat sent fewer than
    /// `electionTicks - 2 - leaseClockDriftBoundTicks` ticks ago. This is safe only if, over an
    /// election timeout, no member's tick count runs ahead of another's by more than this many
    /// ticks (the 2 cover the tick granularity at both ends), and if `tick()` is called once per
    /// elapsed interval of a monotonic clock, missed intervals included (after a pause, say).
    /// It needs check-quorum, and must be the same on every member: with it, a member that has
    /// just started also ignores campaigns for an election timeout, since it may have
    /// acknowledged a heartbeat before it stopped.
    public var leaseClockDriftBoundTicks: Int? = nil
    /// A known bug to switch on, so the simulator can show that it finds it. Only code that
    /// imports the core with `@_spi(Simulation)` can set it; production code never does.
    @_spi(Simulation) public var plantedBug: PlantedBug? = nil

    public init(id: NodeID) {
        self.id = id
    }

    func validate() {
        precondition(id != 0, "node id 0 is reserved")
        precondition(
            heartbeatTicks > 0 && electionTicks > heartbeatTicks, "election timeout must exceed the heartbeat interval")
        precondition(maxMessageBytes > 0 && maxInflightMessages > 0 && maxApplyBytesPerReady > 0)
        precondition(maxUncommittedBytes >= 0 && maxInflightBytes >= 0)
        if let bound = leaseClockDriftBoundTicks {
            precondition(checkQuorum, "lease reads need check-quorum")
            precondition(
                bound >= 0 && electionTicks - 2 - bound >= 1,
                "the lease (electionTicks - 2 - drift bound) must be at least one tick")
        }
    }

    /// Ticks after a heartbeat's sending during which its quorum's acknowledgement keeps the
    /// lease; nil when lease reads are off.
    var leaseTicks: UInt64? { leaseClockDriftBoundTicks.map { UInt64(electionTicks - 2 - $0) } }
}

/// Why a request to the core was refused.
public enum RaftError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This node is not the leader; `leaderHint` is the leader it knows of (0: none known).
    case notLeader(leaderHint: NodeID)
    /// A leadership transfer is under way; retry after it completes.
    case transferInProgress
    /// Too many bytes are appended but not yet committed; retry after some commit.
    case tooManyUncommittedBytes
    /// A membership change is still being applied; changes are made one at a time.
    case configurationChangePending
    case invalidConfigurationChange(String)
    case invalidTransferTarget(String)

    public var description: String {
        switch self {
        case .notLeader(let hint):
            return hint == 0
                ? "not the leader, and no leader is known yet; retry shortly"
                : "not the leader; send the request to node \(hint)"
        case .transferInProgress: return "leadership transfer in progress; retry after it completes"
        case .tooManyUncommittedBytes: return "too much uncommitted data; retry after some commits"
        case .configurationChangePending: return "a membership change is still in progress; make one change at a time"
        case .invalidConfigurationChange(let why): return "invalid membership change: \(why)"
        case .invalidTransferTarget(let why): return "cannot transfer leadership: \(why)"
        }
    }
}

/// Bugs that the simulator must be able to find (see `crm-sim --plant-bug`). Each breaks one
/// rule of the protocol, or of the loop that drives it, on purpose.
@_spi(Simulation) public enum PlantedBug: String, CaseIterable, Sendable {
    /// The leader commits any index a quorum has, even one whose entry is of an older term
    /// (Raft paper, figure 8).
    case oldTermCommit = "old-term-commit"
    /// A restarted member forgets whom it voted for, and may vote twice in one term.
    case forgetVote = "forget-vote"
    /// The leader answers read requests at once from its own commit index, without asking a
    /// quorum whether it still leads.
    case staleRead = "stale-read"
    /// Votes and acknowledgements leave before the disk write that they promise.
    case noPersistBeforeSend = "no-persist-before-send"

    // Bugs in the member loop that drives the core (`Engine.MemberLoop`), not in the core.

    /// A linearizable read is answered as soon as its read index is known, before this member
    /// has applied up to it.
    case readBeforeApplied = "read-before-applied"
    /// A proposal's caller is answered by whatever entry commits at its index, even one of
    /// another term that replaced it.
    case waiterIgnoresTerm = "waiter-ignores-term"

    // Bugs in the state machine (`KVStore.ReplicatedKV`).

    /// A transaction is applied when its first condition holds, whatever the others say.
    case transactionChecksOneCondition = "txn-one-condition"
    /// An audit entry links to the head as stored before the batch being applied, not to the
    /// head an earlier entry of the same batch wrote.
    case auditHeadBeforeBatch = "audit-head-before-batch"
}
