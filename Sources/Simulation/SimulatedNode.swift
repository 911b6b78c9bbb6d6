import BinaryCoding
import Engine
@_spi(Simulation) import KVStore
import Logging
@_spi(Simulation) import Raft
import Storage

/// One simulated member: the shipped `MemberLoop` and `ReplicatedKV`, on a simulated disk for
/// its log (a `MemoryLogStore` that keeps only what was synced) and an in-memory store for its
/// state machine (which loses what was not synced when the member crashes).
final class SimulatedNode {
    let id: NodeID
    /// The log's disk: synced writes survive crashes, the one in flight does not.
    let disk: SimulatedDisk
    /// The state machine's store: survives crashes, as far as it was synced.
    let storage = MemoryStateStorage()
    /// Nil while crashed (or after being removed from the cluster and stopped).
    var loop: MemberLoop?
    /// The simulator's checks on this member's loop (the loop holds its observer weakly).
    private var observer: (any MemberLoopObserver)?
    /// Bumped at every crash and restart, so events of an earlier life are ignored.
    var incarnation = 0
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
    /// The applied index at which the records' invariants last held on this member.
    var recordsCheckedAt: UInt64?

    init(id: NodeID, configuration: Configuration) {
        self.id = id
        disk = SimulatedDisk(configuration: configuration)
    }

    var raft: RaftNode? { loop?.raft }
    var kv: ReplicatedKV? { loop?.kv }
    var store: MemoryLogStore { disk.store }
    var isUp: Bool { loop != nil }

    /// The process stops at once: the write in flight and the state machine's unsynced writes
    /// are lost, and nobody waiting on it is answered (their connections just drop).
    func crash() {
        loop = nil
        crashPoint = nil
        pausedUntil = nil
        pausedAt = nil
        disk.crash()
        storage.losePowerNow()
        incarnation += 1
    }

    /// Starts from what is on disk, as a real process would: the state machine opens on its
    /// store (restored from the log's snapshot if it is behind it), then the loop.
    func start(
        config: RaftConfig, options: MemberLoop.Options, randomSeed: UInt64, clock: SimulatedClock, outbox: any Outbox,
        observer: any MemberLoopObserver
    ) throws {
        precondition(loop == nil && !retired, "starting node \(id) twice")
        incarnation += 1
        var kvOptions = ReplicatedKV.Options()
        kvOptions.plantedBug = config.plantedBug
        let kv = try ReplicatedKV(storage: storage, options: kvOptions, logger: Self.silent)
        let loop = try MemberLoop(
            config: config, log: disk, kv: kv, outbox: outbox, clock: clock, options: options,
            random: SeededRandom(seed: randomSeed), logger: Self.silent)
        loop.observer = observer
        self.observer = observer
        self.loop = loop
        checkedCommit = loop.raft.commitIndex
    }

    /// Simulated members log nothing (a trace shows what happened).
    static let silent = Logger(label: "simulation", factory: { _ in SwiftLogNoOpLogHandler() })
}

/// The simulated disk under a member's log: `write` starts a write that the scheduler completes
/// after a drawn sync latency (`sync()`); a crash before that loses it.
final class SimulatedDisk: StoreBackedLogWriter {
    /// What is synced: survives crashes.
    let store: MemoryLogStore
    /// The write in flight, if any.
    private(set) var pending: Ready?
    /// Checks entries as they reach the disk, with the term of the entry before them (the
    /// simulator's persistence invariants).
    var checkPersisted: (([Entry], UInt64) throws -> Void)?

    init(configuration: Configuration) { store = MemoryLogStore(configuration: configuration) }

    var hardState: HardState { store.hardState }

    func write(_ ready: Ready) throws -> LogWriteProgress {
        precondition(pending == nil, "a second write while one is in flight")
        pending = ready
        return .inFlight
    }

    /// The write in flight is now on disk.
    func sync() throws {
        guard let ready = pending else { preconditionFailure("no write in flight") }
        pending = nil
        if let snapshot = ready.snapshot { store.applySnapshot(snapshot) }
        if let first = ready.entries.first {
            guard let previousTerm = store.term(at: first.index - 1) else {
                preconditionFailure("entries from \(first.index) after a gap (last \(store.lastIndex))")
            }
            try checkPersisted?(ready.entries, previousTerm)
            store.append(ready.entries)
        }
        if let hardState = ready.hardState { store.setHardState(hardState) }
    }

    func compact(to snapshot: Snapshot) throws {
        precondition(pending == nil, "compaction while a write is in flight")
        store.compact(to: snapshot)
    }

    func crash() { pending = nil }
}

/// Simulated time, the same for every member (their tick rates differ instead).
final class SimulatedClock: MonotonicClock {
    var milliseconds: UInt64 = 0
    var nanoseconds: UInt64 { milliseconds * 1_000_000 }
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
        case .acknowledgement:
            return promises.contains { $0.kind == .appendResponse && !$0.reject } && !ready.entries.isEmpty
        case .leadership: return ready.softState?.role == .leader
        }
    }

    var description: String { "\(moment.rawValue) its next \(trigger.rawValue) write" }
}

/// A request from a simulated client to a node.
struct ClientRequest {
    /// The client and its operation's sequence number (in its session).
    var id: RequestID
    var client: Int
    /// Which of the client's attempts at it this is (a refusal only moves the current one on).
    var attempt: Int
    var call: Call

    enum Call {
        /// Opens the client's session (before its first operation).
        case openSession
        case operation(KVOperation, session: UInt64)
    }
}

/// A node's answer to a client.
enum ClientReply {
    case result(RequestID, KVResult)
    case sessionOpened(RequestID, UInt64)
    case notLeader(RequestID, hint: NodeID)
    case retryLater(RequestID)

    var request: RequestID {
        switch self {
        case .result(let id, _), .sessionOpened(let id, _), .notLeader(let id, _), .retryLater(let id): return id
        }
    }
}
