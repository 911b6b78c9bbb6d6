import Dispatch
import Engine
import Foundation
import KVStore
import Logging
import Raft
import RaftStorage
import Synchronization
import Transport

/// The member's Raft thread: it owns a `MemberLoop` (the deterministic part, which the simulator
/// runs too) and gives it what only a real process has — a thread, an inbox that any thread
/// posts to, the machine's monotonic clock for ticks, the durable log and the peer transport.
///
/// Each iteration takes every event that arrived, feeds the loop, ticks it as the clock says,
/// and lets it work through the core's Readies (group commit: one synced write for everything
/// proposed meanwhile). Callers wait on async functions; every wait has a deadline, swept on
/// each tick.
public final class RaftEngine: @unchecked Sendable {
    public let id: NodeID
    public let kv: ReplicatedKV
    let options: EngineOptions
    let metrics: NodeMetrics
    private let loop: MemberLoop
    private let clock = SystemMonotonicClock()
    private let writer: DurableLogWriter
    private let logger: Logger
    private let inbox: EventInbox
    private let published: Mutex<EngineStatus>
    /// Synced writes of the log (and the health probe's), for the health monitor.
    var syncLatency: SyncLatencyRecorder { writer.syncLatency }
    /// How late the loop woke for its ticks, when it was late by more than a tick.
    let loopLateness = Mutex(TimedSamples(capacity: 256))
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// The loop and everything below belong to the Raft thread: checked in debug builds.
    private let loopThread = ThreadConfinement()
    private var stopping = false
    private var failure: String?
    /// Called on the Raft thread after a membership change or member addresses were applied.
    public var onMembershipApplied: (@Sendable (EngineStatus) -> Void)?

    /// Builds the engine on an opened log and state machine; `start()` runs it.
    public init(
        id: NodeID, log: DurableLogStore, kv: ReplicatedKV, transport: PeerTransport, options: EngineOptions,
        metrics: NodeMetrics = NodeMetrics(), randomSeed: UInt64, logger: Logger
    ) throws {
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.id = id
        self.kv = kv
        self.options = options
        self.metrics = metrics
        self.logger = logger
        writer = DurableLogWriter(log: log, metrics: metrics)
        inbox = EventInbox(maxRequests: options.maxWaitingRequests, maxMessageBatches: options.maxWaitingMessageBatches)
        loop = try MemberLoop(
            config: options.raftConfig(id: id), log: writer, kv: kv, outbox: TransportOutbox(transport), clock: clock,
            options: options.loopOptions, random: SeededRandom(seed: randomSeed),
            received: transport.snapshotSpool.map(SpooledSnapshots.init), logger: logger)
        published = Mutex(EngineStatus(id: id))
        loop.observer = self
        publishStatus()
    }

    // MARK: - Running

    public func start() {
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "raft-\(id)"
        thread.stackSize = 4 << 20
        self.thread = thread
        thread.start()
    }

    /// Stops the loop; every waiting caller gets `EngineError.stopped`.
    public func stop() {
        inbox.post(.stop)
        finished.wait()
    }

    public var currentStatus: EngineStatus { published.withLock { $0 } }

    // MARK: - Requests (any thread)

    /// Proposes a command; returns once it is applied (on the leader). A session write
    /// (`forwardable`) proposed on a follower is forwarded to the leader in the log's own
    /// messages and returns once applied on this member; other commands a follower refuses.
    public func propose(
        _ data: [UInt8], forwardable: SessionWrite? = nil, timeoutMilliseconds: Int? = nil
    ) async throws -> ProposalResult {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(
                .propose(
                    data,
                    waiter(continuation, timeoutMilliseconds: timeoutMilliseconds) { [metrics] started, now in
                        metrics.proposalDuration.recordNanoseconds(Int64(now - min(started, now)))
                    }, forwardable: forwardable))
        }
    }

    /// Waits until this member's state machine has applied everything committed before the
    /// call (ReadIndex through the leader); then a read of `kv` is linearizable.
    public func waitForLinearizableRead() async throws {
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<UInt64, any Error>) in
            inbox.post(
                .read(
                    waiter(continuation) { [metrics] started, now in
                        metrics.readIndexDuration.recordNanoseconds(Int64(now - min(started, now)))
                    }))
        }
    }

    /// Proposes a membership change; returns once it is applied.
    public func changeMembership(_ change: ConfigurationChange) async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.change(change, waiter(continuation)))
        }.index
    }

    /// Starts handing leadership to `target`; returns once it leads (or the deadline passes).
    public func transferLeadership(to target: NodeID) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            inbox.post(.transfer(target, waiter(continuation)))
        }
    }

    /// Which entries a compaction keeps for the log archiver: given the index compacted to, the
    /// first entry to keep (nil: none are kept). Set before `start`; called on the Raft thread.
    public func retainForArchive(_ keepFrom: @escaping @Sendable (UInt64) -> UInt64) {
        writer.retention = keepFrom
    }

    /// Committed and applied entries from `from` for the log archiver (at most `maxBytes`, at
    /// least one when any is there), with the term of the entry before them; fails when `from`
    /// is no longer kept.
    func readArchive(from: UInt64, maxBytes: Int) async throws -> ArchiveRead {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.readArchive(from: from, maxBytes: maxBytes, continuation))
        }
    }

    /// Takes a snapshot at the applied index now and compacts the log up to it.
    public func snapshotNow() async throws -> SnapshotMetadata {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.snapshotNow(continuation))
        }
    }

    /// A waiter on the loop's clock that resumes `continuation`; `succeeded` sees its start and
    /// answer times (for the latency metrics).
    private func waiter<Value: Sendable>(
        _ continuation: CheckedContinuation<Value, any Error>, timeoutMilliseconds: Int? = nil,
        succeeded: (@Sendable (UInt64, UInt64) -> Void)? = nil
    ) -> Waiter<Value> {
        precondition(timeoutMilliseconds.map { $0 > 0 } ?? true, "a waiter's timeout must be positive")
        let now = clock.nanoseconds
        let clock = self.clock
        let timeout = UInt64(
            min(timeoutMilliseconds ?? options.requestTimeoutMilliseconds, options.requestTimeoutMilliseconds))
        return Waiter(startedAt: now, deadline: now + timeout * 1_000_000) {
            result in
            switch result {
            case .success(let value):
                succeeded?(now, clock.nanoseconds)
                continuation.resume(returning: value)
            case .failure(let error):
                continuation.resume(throwing: error)
            }
        }
    }

    // MARK: - Transport delegate

    func received(_ messages: [Message], from peer: NodeID) { inbox.post(.messages(messages, from: peer)) }
    func snapshotReport(peer: NodeID, delivered: Bool) { inbox.post(.snapshotReport(peer, delivered)) }

    // MARK: - The thread

    private func run() {
        loopThread.claim()
        kv.applyThread.claim()
        let tickNanoseconds = UInt64(options.tickMilliseconds) * 1_000_000
        var nextTick = clock.nanoseconds + tickNanoseconds
        logger.info(
            "raft loop started",
            metadata: [
                "term": "\(loop.raft.term)", "commit": "\(loop.raft.commitIndex)",
                "last_index": "\(loop.raft.lastIndex)",
            ])
        while !stopping {
            for event in inbox.take(max: options.maxEventsPerIteration, until: nextTick) { handle(event) }
            // Ticks follow the monotonic clock, missed ones included (after a stall, a leader
            // must see how long it has not heard from its quorum).
            let now = clock.nanoseconds
            if now > nextTick + tickNanoseconds {
                loopLateness.withLock { $0.record(at: now, nanoseconds: now - nextTick) }
            }
            var ticks = 0
            while now >= nextTick && ticks < 10 * options.electionTicks {
                loop.tick()
                nextTick += tickNanoseconds
                ticks += 1
            }
            if now >= nextTick { nextTick = now + tickNanoseconds }
            if ticks > 0 { loop.expireWaiters() }
            do {
                try loop.drive()
            } catch {
                fail(error)
                return
            }
            publishStatus()
        }
        failAll(.stopped)
        logger.info("raft loop stopped")
    }

    private func handle(_ event: EngineEvent) {
        assert(loopThread.isOwner, "engine state touched off the loop thread")
        switch event {
        case .messages(let messages, let peer): loop.receive(messages, from: peer)
        case .propose(let data, let waiter, let forwardable): loop.propose(data, waiter, forwardable: forwardable)
        case .read(let waiter): loop.read(waiter)
        case .change(let change, let waiter): loop.changeMembership(change, waiter)
        case .transfer(let target, let waiter): loop.transferLeadership(to: target, waiter)
        case .snapshotReport(let peer, let delivered): loop.snapshotReport(peer: peer, delivered: delivered)
        case .snapshotNow(let continuation):
            do {
                continuation.resume(returning: try loop.compact())
            } catch {
                continuation.resume(throwing: EngineError.storage("\(error)"))
            }
        case .readArchive(let from, let maxBytes, let continuation):
            continuation.resume(
                with: Result { try writer.store.archive(from: from, upTo: kv.appliedIndex, maxBytes: maxBytes) })
        case .stop: stopping = true
        }
    }

    private func fail(_ error: any Error) {
        let what = error is KVApplyError ? "this member cannot apply the log" : "storage failed"
        logger.critical("\(what); this member stops serving", metadata: ["error": "\(error)"])
        failure = "\(error)"
        publishStatus()
        failAll(.storage("\(error)"))
    }

    private func failAll(_ error: EngineError) {
        loop.failAll(error)
        for event in inbox.drain() { event.fail(error) }
    }

    private func publishStatus() {
        var status = loop.status()
        let waiting = inbox.counts
        status.refusedBusyRequests = waiting.refusedRequests
        status.droppedMessageBatches = waiting.droppedMessageBatches
        status.failure = failure
        published.withLock { $0 = status }
    }
}

extension RaftEngine: MemberLoopObserver {
    public func loopApplied(_ entries: [Entry], nanoseconds: UInt64) {
        metrics.applyDuration.recordNanoseconds(Int64(nanoseconds))
    }

    public func loopAppliedMembership(_ status: EngineStatus) {
        publishStatus()
        onMembershipApplied?(currentStatus)
    }
}

extension RaftEngine: PeerTransportDelegate {
    public func peerTransport(received messages: [Message], from peer: NodeID) { received(messages, from: peer) }
    public func peerTransport(snapshotTo peer: NodeID, delivered: Bool) {
        snapshotReport(peer: peer, delivered: delivered)
    }
}

/// The durable log as the loop's `LogWriter`: every write synced, timed for the metrics and the
/// health monitor, with the debug builds' disk fault hook in front.
final class DurableLogWriter: StoreBackedLogWriter, @unchecked Sendable {
    let store: DurableLogStore
    let metrics: NodeMetrics
    let syncLatency = SyncLatencyRecorder()

    init(log: DurableLogStore, metrics: NodeMetrics) {
        store = log
        self.metrics = metrics
    }

    var hardState: HardState { store.hardState }

    func write(_ ready: Ready) throws -> LogWriteProgress {
        // A commit index alone is written without a sync (see `DurableLogStore.mustSync`): not
        // a sync to time or to fail.
        guard store.mustSync(ready) else {
            try store.save(ready)
            return .durable
        }
        let started = DispatchTime.now().uptimeNanoseconds
        syncLatency.withLock { $0.begin(.raftLog, at: started) }
        try FaultHooks.shared.beforeSync()
        try store.save(ready)
        let finished = DispatchTime.now().uptimeNanoseconds
        syncLatency.withLock { $0.end(.raftLog, at: finished) }
        metrics.persistDuration.recordNanoseconds(Int64(finished - started))
        return .durable
    }

    /// See `RaftEngine.retainForArchive`.
    var retention: (@Sendable (UInt64) -> UInt64)?

    func compact(to snapshot: Snapshot) throws {
        try store.compact(to: snapshot, retainingFrom: retention?(snapshot.metadata.index))
    }
}

/// What the log archiver read: entries from the index it asked for, the term before them, and
/// where the member's kept entries start.
struct ArchiveRead: Sendable {
    var previousTerm: UInt64
    var entries: [Entry]
    var keptFrom: UInt64
}

extension DurableLogStore {
    /// Entries `from...` up to `applied` and `maxBytes` (none when `from` is past it), and the
    /// term of the entry before `from`: kept on disk, or the snapshot's.
    func archive(from: UInt64, upTo applied: UInt64, maxBytes: Int) throws -> ArchiveRead {
        guard from >= retainedFrom, from >= 1 else {
            throw EngineError.storage("entry \(from) is no longer kept (kept from \(retainedFrom))")
        }
        let previousTerm: UInt64
        if from - 1 == snapshotMetadata.index {
            previousTerm = snapshotMetadata.term
        } else if from - 1 >= firstIndex, let term = term(at: from - 1) {
            previousTerm = term
        } else if from - 1 >= retainedFrom {
            previousTerm = try retainedEntries(from: from - 1, through: from - 1, maxBytes: .max)[0].term
        } else {
            throw EngineError.storage("the entry before \(from) is no longer kept, its term unknown")
        }
        guard from <= applied else {
            return ArchiveRead(previousTerm: previousTerm, entries: [], keptFrom: retainedFrom)
        }
        let entries = try retainedEntries(from: from, through: applied, maxBytes: maxBytes)
        return ArchiveRead(previousTerm: previousTerm, entries: entries, keptFrom: retainedFrom)
    }
}

/// The transport's snapshot spool as the loop's received snapshots.
final class SpooledSnapshots: ReceivedSnapshots {
    let spool: SnapshotSpool

    init(_ spool: SnapshotSpool) { self.spool = spool }

    func snapshot(at metadata: SnapshotMetadata) throws -> (any SnapshotSource)? {
        try spool.received(index: metadata.index, term: metadata.term)
    }

    func discard(through index: UInt64) { spool.discard(through: index) }
}

/// The peer transport as the loop's `Outbox`.
final class TransportOutbox: Outbox {
    let transport: PeerTransport

    init(_ transport: PeerTransport) { self.transport = transport }

    func send(_ messages: [Message]) -> [NodeID] { Array(transport.send(messages)) }
}

/// The log's (and the health probe's) synced writes, shared by the writer and the health monitor.
final class SyncLatencyRecorder: Sendable {
    private let samples = Mutex(SyncLatency())

    func withLock<Result: Sendable>(_ body: (inout SyncLatency) -> Result) -> Result {
        samples.withLock { body(&$0) }
    }
}
