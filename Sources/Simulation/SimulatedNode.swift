import BinaryCoding
import Raft

/// One simulated member: a consensus core, its disk (a `MemoryLogStore` that keeps only what
/// was synced) and its state machine (rebuilt from the disk after a crash).
final class SimulatedNode {
    let id: NodeID
    /// The synced disk: survives crashes.
    let store: MemoryLogStore
    /// Nil while crashed (or after being removed from the cluster and stopped).
    var raft: RaftNode?
    /// Bumped at every crash and restart, so events of an earlier life are ignored.
    var incarnation = 0
    var machine = KVStateMachine()
    /// A Ready whose disk write has not completed yet; lost if the node crashes first.
    var unsynced: Ready?
    /// Writes this node will answer when it applies them (client index by request).
    var waitingWrites: [RequestID: Int] = [:]
    var waitingReads: [PendingRead] = []
    /// While set and in the future, the process is stopped (SIGSTOP): no ticks, no messages.
    var pausedUntil: UInt64?
    var pausedAt: UInt64?
    /// This member's tick interval (its clock's rate), drawn when it first starts.
    var tickMilliseconds: UInt64 = 0
    /// Where this node is set to crash next, if anywhere (see `CrashPoint`).
    var crashPoint: CrashPoint?
    /// Removed from the configuration and stopped for good.
    var retired = false
    /// Highest commit index already checked against the invariants.
    var checkedCommit: UInt64 = 0
    private var readCounter: UInt64 = 0

    /// Most reads a node holds for clients; older ones are dropped (their clients retry).
    static let maxWaitingReads = 256

    struct PendingRead {
        var context: [UInt8]
        var request: ClientRequest
        /// Known once the leader confirmed the read point.
        var index: UInt64?
        /// The highest index committed anywhere when the request arrived: the read point
        /// must not be below it.
        var committedBefore: UInt64
    }

    init(id: NodeID, configuration: Configuration) {
        self.id = id
        store = MemoryLogStore(configuration: configuration)
    }

    var isUp: Bool { raft != nil }

    func crash() {
        raft = nil
        crashPoint = nil
        pausedUntil = nil
        pausedAt = nil
        unsynced = nil
        waitingWrites = [:]
        waitingReads = []
        incarnation += 1
    }

    /// Starts from what is on disk, as a real process would.
    func start(config: RaftConfig, randomSeed: UInt64) {
        precondition(raft == nil && !retired, "starting node \(id) twice")
        incarnation += 1
        raft = RaftNode(config: config, store: store, hardState: store.hardState, random: SeededRandom(seed: randomSeed))
        machine = Self.machine(from: store.snapshot())
        precondition(machine.appliedIndex == raft!.appliedIndex, "state machine and log disagree after restart")
        checkedCommit = raft!.commitIndex
    }

    static func machine(from snapshot: Snapshot) -> KVStateMachine {
        if snapshot.metadata.index == 0 && snapshot.data.isEmpty { return KVStateMachine() }
        guard let machine = KVStateMachine(encoded: snapshot.data), machine.appliedIndex == snapshot.metadata.index else {
            preconditionFailure("snapshot at \(snapshot.metadata.index) does not decode")
        }
        return machine
    }

    /// A context naming one read request uniquely on this node across restarts.
    func nextReadContext() -> [UInt8] {
        readCounter += 1
        var writer = BinaryWriter()
        writer.u64(id)
        writer.u64(UInt64(incarnation))
        writer.u64(readCounter)
        return writer.bytes
    }

    func holdRead(_ read: PendingRead) {
        if waitingReads.count == Self.maxWaitingReads { waitingReads.removeFirst() }
        waitingReads.append(read)
    }
}

/// A moment at which a node is made to crash: at the edges of a disk write, where durability
/// bugs live (a promise sent before its write, a write lost after its promise).
struct CrashPoint: CustomStringConvertible {
    enum Moment: String {
        /// While the write is in flight: it is lost, though messages sent before it (which must
        /// not depend on it) are out.
        case during
        /// Just after the write completed and the messages waiting for it were sent.
        case after
    }

    /// Which write arms the crash.
    enum Trigger: String, CaseIterable {
        case anyWrite = "write"
        /// A write that goes with a granted vote.
        case vote = "vote"
        /// A write that goes with an acknowledgement of appended entries.
        case acknowledgement = "acknowledgement"
        /// A new leader's write of the empty entry that opens its term.
        case leadership = "new-leader"
    }

    var moment: Moment
    var trigger: Trigger

    /// Whether the write that goes with `ready` arms this crash.
    func fires(on ready: Ready) -> Bool {
        let promises = ready.messages + ready.messagesAfterPersist
        switch trigger {
        case .anyWrite: return true
        case .vote: return promises.contains { $0.kind == .voteResponse && !$0.reject }
        case .acknowledgement: return promises.contains { $0.kind == .appendResponse && !$0.reject } && !ready.entries.isEmpty
        case .leadership: return ready.softState?.role == .leader
        }
    }

    var description: String { "\(moment.rawValue) its next \(trigger.rawValue) write" }
}

/// A request from a simulated client to a node.
struct ClientRequest {
    var id: RequestID
    var client: Int
    var operation: KVOperation
}

/// A node's answer to a client.
enum ClientReply {
    case result(RequestID, KVResult)
    case notLeader(RequestID, hint: NodeID)
    case retryLater(RequestID)

    var request: RequestID {
        switch self {
        case .result(let id, _), .notLeader(let id, _), .retryLater(let id): return id
        }
    }
}
