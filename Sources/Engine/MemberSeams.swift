import Dispatch
import KVStore
import Raft

/// Where the loop makes the log durable: the member's `DurableLogStore`, or the simulator's
/// disk. It is also the `LogStore` the core reads persisted entries from.
public protocol LogWriter: LogStore {
    var hardState: HardState { get }
    /// Makes what `ready` asks to persist (snapshot, entries replacing any at the same or
    /// later indexes, hard state) durable, or starts to: `.inFlight` means the owner calls
    /// `MemberLoop.writeCompleted()` once it is (the simulated disk's sync latency).
    func write(_ ready: Ready) throws -> LogWriteProgress
    /// Drops the log up to `snapshot`'s index, keeping the snapshot in its place.
    func compact(to snapshot: Snapshot) throws
}

/// A `LogWriter` that reads through to the store it writes to.
public protocol StoreBackedLogWriter: LogWriter {
    associatedtype Store: LogStore
    var store: Store { get }
}

extension StoreBackedLogWriter {
    public var snapshotMetadata: SnapshotMetadata { store.snapshotMetadata }
    public var firstIndex: UInt64 { store.firstIndex }
    public var lastIndex: UInt64 { store.lastIndex }
    public func term(at index: UInt64) -> UInt64? { store.term(at: index) }
    public func entries(from: UInt64, to: UInt64, maxBytes: Int) -> [Entry] {
        store.entries(from: from, to: to, maxBytes: maxBytes)
    }
    public func snapshot() -> Snapshot { store.snapshot() }
}

public enum LogWriteProgress: Sendable {
    /// Durable when `write` returned.
    case durable
    /// Still being written; nothing that depends on it may leave yet.
    case inFlight
}

/// Snapshots received from leaders and kept (on disk) until installed; the log records only
/// their metadata.
public protocol ReceivedSnapshots: AnyObject {
    /// The received snapshot at `metadata`, if it is kept.
    func snapshot(at metadata: SnapshotMetadata) throws -> (any SnapshotSource)?
    /// Drops received snapshots at or below `index` (installed or superseded).
    func discard(through index: UInt64)
}

/// Where the loop's messages to peers go: the peer transport, or the simulated network.
public protocol Outbox: AnyObject {
    /// Sends `messages` in order; returns the peers that cannot be reached now (their
    /// messages were dropped, and the core is told so it probes them gently).
    func send(_ messages: [Message]) throws -> [NodeID]
}

/// The loop's notion of time: monotonic nanoseconds (deadlines, round trips, rate limits).
public protocol MonotonicClock: AnyObject {
    var nanoseconds: UInt64 { get }
}

/// The machine's monotonic clock.
public final class SystemMonotonicClock: MonotonicClock, Sendable {
    public init() {}
    public var nanoseconds: UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// What the loop tells whoever runs it, all on the loop's thread. Every method has an empty
/// default: the member counts and reacts, the simulator checks invariants.
public protocol MemberLoopObserver: AnyObject {
    /// A Ready was taken from the core, before anything of it is sent or written.
    func loopTook(_ ready: Ready) throws
    /// Committed entries about to be applied, in order.
    func loopWillApply(_ entries: [Entry]) throws
    /// `entries` were applied to the state machine in `nanoseconds`.
    func loopApplied(_ entries: [Entry], nanoseconds: UInt64)
    /// The state machine sits exactly at a snapshot's index: one installed from the leader, or
    /// one taken to compact the log (`state` is pinned there).
    func loopHolds(_ metadata: SnapshotMetadata, state: PinnedState) throws
    /// A membership change, or a member's addresses, was applied.
    func loopAppliedMembership(_ status: EngineStatus)
}

extension MemberLoopObserver {
    public func loopTook(_ ready: Ready) throws {}
    public func loopWillApply(_ entries: [Entry]) throws {}
    public func loopApplied(_ entries: [Entry], nanoseconds: UInt64) {}
    public func loopHolds(_ metadata: SnapshotMetadata, state: PinnedState) throws {}
    public func loopAppliedMembership(_ status: EngineStatus) {}
}
