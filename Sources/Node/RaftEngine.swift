import Dispatch
import Foundation
import KVStore
import Logging
import Raft
import RaftStorage
import Synchronization
import Transport

/// The node's Raft loop: one thread that owns the consensus core, its durable log and the state
/// machine, and drives them in the order the core requires.
///
/// Each iteration takes every event that arrived (peer messages, proposals, reads, ticks) and
/// feeds them to the core, then works through its `Ready`s: send what may precede the write,
/// persist (one synced write for everything proposed meanwhile: group commit), send what
/// depended on it, apply committed entries and answer their proposers, answer reads whose
/// read index is applied, and compact the log when due. Callers wait on async functions; every
/// wait has a deadline, swept on each tick.
public final class RaftEngine: @unchecked Sendable {
    public struct Options: Sendable {
        public var tickMilliseconds = 100
        public var electionTicks = 10
        public var heartbeatTicks = 1
        public var maxAppendBytes = 1 << 20
        public var maxInflightMessages = 256
        public var maxUncommittedBytes = 64 << 20
        public var snapshotEveryEntries: UInt64 = 10_000
        public var requestTimeoutMilliseconds = 5000
        /// Events taken per iteration at most, so that ticks and sends are never starved.
        public var maxEventsPerIteration = 4096
        /// Requests (proposals, reads, changes) waiting for the loop at most; more are refused
        /// with `busy` at once (see `EventInbox`).
        public var maxWaitingRequests = 20_000
        /// Batches of peer messages waiting at most; more are dropped (Raft sends again).
        public var maxWaitingMessageBatches = 10_000

        public init() {}
    }

    public let id: NodeID
    public let kv: ReplicatedKV
    let options: Options
    let metrics: NodeMetrics
    private let raft: RaftNode
    private let log: DurableLogStore
    private let transport: PeerTransport
    private let logger: Logger
    private let inbox: EventInbox
    private let published: Mutex<EngineStatus>
    /// Synced writes of the log (and the health probe's), for the health monitor.
    let syncLatency = Mutex(SyncLatency())
    /// How late the loop woke for its ticks, when it was late by more than a tick.
    let loopLateness = Mutex(TimedSamples(capacity: 256))
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    /// Everything below "Loop-thread state" belongs to the loop thread: checked in debug builds.
    private let loopThread = ThreadConfinement()

    // Loop-thread state.
    private var proposals: [UInt64: ProposalWaiter] = [:]
    /// Reads that arrived in this iteration: they share one ReadIndex request.
    private var newReads: [ReadWaiter] = []
    /// ReadIndex requests in flight, by context, with the tick they were (re)sent at.
    private var reads: [UInt64: (waiters: [ReadWaiter], sentAtTick: UInt64)] = [:]
    private var readsAwaitingApply: [(index: UInt64, waiter: ReadWaiter)] = []
    private var tickCount: UInt64 = 0
    private var changes: [UInt64: ProposalWaiter] = [:]
    private var appliedChanges: [(index: UInt64, waiter: ProposalWaiter)] = []
    private var nextReadID: UInt64 = 1
    private var lastContact: [NodeID: UInt64] = [:]
    /// When the outstanding heartbeat to each peer was sent, and the latest round trips.
    private var heartbeatSentAt: [NodeID: UInt64] = [:]
    private var roundTrips: [NodeID: UInt64] = [:]
    private var status: EngineStatus
    private var stopping = false

    /// Builds the engine on an opened log and state machine; `start()` runs it.
    public init(id: NodeID, log: DurableLogStore, kv: ReplicatedKV, transport: PeerTransport, options: Options,
                metrics: NodeMetrics = NodeMetrics(), randomSeed: UInt64, logger: Logger) {
        var config = RaftConfig(id: id)
        config.electionTicks = options.electionTicks
        config.heartbeatTicks = options.heartbeatTicks
        config.maxMessageBytes = options.maxAppendBytes
        config.maxInflightMessages = options.maxInflightMessages
        config.maxUncommittedBytes = options.maxUncommittedBytes
        // Writes reach the leader through the client API, which knows how to answer the client.
        config.forwardProposals = false
        self.id = id
        self.options = options
        inbox = EventInbox(maxRequests: options.maxWaitingRequests, maxMessageBatches: options.maxWaitingMessageBatches)
        self.metrics = metrics
        self.log = log
        self.kv = kv
        self.transport = transport
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.logger = logger
        raft = RaftNode(config: config, store: log, hardState: log.hardState, random: SeededRandom(seed: randomSeed))
        status = EngineStatus(id: id)
        published = Mutex(EngineStatus(id: id))
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

    /// Proposes a command; returns once it is applied (on the leader).
    public func propose(_ data: [UInt8]) async throws -> ProposalResult {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.propose(data, ProposalWaiter(continuation: continuation, deadline: deadline())))
        }
    }

    /// Waits until this member's state machine has applied everything committed before the
    /// call (ReadIndex through the leader); then a read of `kv` is linearizable.
    public func waitForLinearizableRead() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            inbox.post(.read(ReadWaiter(continuation: continuation, deadline: deadline())))
        }
    }

    /// Proposes a membership change; returns once it is applied.
    public func changeMembership(_ change: ConfigurationChange) async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.change(change, ProposalWaiter(continuation: continuation, deadline: deadline())))
        }.index
    }

    /// Starts handing leadership to `target`; returns once it leads (or the deadline passes).
    public func transferLeadership(to target: NodeID) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            inbox.post(.transfer(target, ReadWaiter(continuation: continuation, deadline: deadline())))
        }
    }

    /// Takes a snapshot at the applied index now and compacts the log up to it.
    public func snapshotNow() async throws -> SnapshotMetadata {
        try await withCheckedThrowingContinuation { continuation in
            inbox.post(.snapshotNow(continuation))
        }
    }

    private func deadline() -> UInt64 {
        DispatchTime.now().uptimeNanoseconds + UInt64(options.requestTimeoutMilliseconds) * 1_000_000
    }

    // MARK: - Transport delegate

    func received(_ messages: [Message], from peer: NodeID) { inbox.post(.messages(messages, from: peer)) }
    func snapshotReport(peer: NodeID, delivered: Bool) { inbox.post(.snapshotReport(peer, delivered)) }

    // MARK: - The loop

    private func run() {
        loopThread.claim()
        kv.applyThread.claim()
        let tickNanoseconds = UInt64(options.tickMilliseconds) * 1_000_000
        var nextTick = DispatchTime.now().uptimeNanoseconds + tickNanoseconds
        logger.info("raft loop started", metadata: ["term": "\(raft.term)", "commit": "\(raft.commitIndex)", "last_index": "\(raft.lastIndex)"])
        while !stopping {
            let events = inbox.take(max: options.maxEventsPerIteration, until: nextTick)
            for event in events { handle(event) }
            requestReads()
            // Ticks follow the monotonic clock, missed ones included (after a stall, a leader
            // must see how long it has not heard from its quorum).
            var now = DispatchTime.now().uptimeNanoseconds
            if now > nextTick + tickNanoseconds {
                let lateness = now - nextTick
                loopLateness.withLock { $0.record(at: now, nanoseconds: lateness) }
            }
            var ticks = 0
            while now >= nextTick && ticks < 10 * options.electionTicks {
                raft.tick()
                nextTick += tickNanoseconds
                ticks += 1
                tickCount += 1
            }
            if now >= nextTick { nextTick = now + tickNanoseconds }
            if ticks > 0 { sweepExpired(now: now) }
            do {
                try processReadies()
                try compactIfDue()
            } catch {
                fail(error)
                return
            }
            now = DispatchTime.now().uptimeNanoseconds
            publishStatus()
        }
        failAll(.stopped)
        logger.info("raft loop stopped")
    }

    private func handle(_ event: EngineEvent) {
        assert(loopThread.isOwner, "engine state touched off the loop thread")
        switch event {
        case .messages(let messages, let peer):
            let now = DispatchTime.now().uptimeNanoseconds
            lastContact[peer] = now
            if let sent = heartbeatSentAt[peer], messages.contains(where: { $0.kind == .heartbeatResponse }) {
                roundTrips[peer] = (now - sent) / 1000
                heartbeatSentAt[peer] = nil
            }
            for message in messages where message.to == id {
                if case .refused(let reason) = (raft.step(message)) { noteRefused(message, from: peer, reason: reason, now: now) }
            }
        case .propose(let data, let waiter):
            propose(data, waiter)
        case .read(let waiter):
            newReads.append(waiter)
        case .change(let change, let waiter):
            do {
                let index = try raft.proposeChange(change)
                changes[index] = waiter
                waiter.term = raft.term
                waiter.index = index
            } catch {
                waiter.fail(Self.translate(error, leader: raft.leader))
            }
        case .transfer(let target, let waiter):
            do {
                try raft.transferLeadership(to: target)
                transferWaiters.append((target, waiter))
            } catch {
                waiter.fail(Self.translate(error, leader: raft.leader))
            }
        case .snapshotReport(let peer, let delivered):
            raft.reportSnapshot(peer: peer, delivered: delivered)
            if delivered { status.snapshotsSent += 1 }
        case .snapshotNow(let continuation):
            do {
                continuation.resume(returning: try compact())
            } catch {
                continuation.resume(throwing: EngineError.storage("\(error)"))
            }
        case .stop:
            stopping = true
        }
    }

    private var transferWaiters: [(target: NodeID, waiter: ReadWaiter)] = []
    /// When a refused peer message was last logged: at most one line a second, the rest counted.
    private var lastRefusalLogAt: UInt64 = 0
    private var refusalsNotLogged = 0

    /// A peer's message the core refused (see `RaftNode.step`): counted in the status, logged
    /// at most once a second so that a hostile peer cannot flood the log.
    private func noteRefused(_ message: Message, from peer: NodeID, reason: String, now: UInt64) {
        status.refusedPeerMessages += 1
        guard now >= lastRefusalLogAt + 1_000_000_000 else {
            refusalsNotLogged += 1
            return
        }
        logger.warning("refused a peer message", metadata: [
            "peer": "\(peer)", "kind": "\(message.kind.rawValue)", "term": "\(message.term)", "reason": "\(reason)",
            "refused_since_last_line": "\(refusalsNotLogged)",
        ])
        lastRefusalLogAt = now
        refusalsNotLogged = 0
    }

    private func propose(_ data: [UInt8], _ waiter: ProposalWaiter) {
        do {
            switch try raft.propose(data) {
            case .appended(let index, let term):
                waiter.term = term
                waiter.index = index
                assert(proposals[index] == nil, "two proposals waiting at index \(index)")
                proposals[index] = waiter
            case .forwarded:
                waiter.fail(.notLeader(leaderHint: raft.leader))
            }
        } catch {
            waiter.fail(Self.translate(error, leader: raft.leader))
        }
    }

    /// One ReadIndex request for every read that arrived in this iteration.
    private func requestReads() {
        guard !newReads.isEmpty else { return }
        let batch = newReads
        newReads = []
        let readID = nextReadID
        nextReadID += 1
        do {
            try raft.requestRead(context: Self.context(readID))
            reads[readID] = (batch, tickCount)
        } catch {
            let failure = Self.translate(error, leader: raft.leader)
            for waiter in batch { waiter.fail(failure) }
        }
    }

    static func context(_ readID: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: readID >> (56 - 8 * UInt64($0))) } }
    static func readID(_ context: [UInt8]) -> UInt64? {
        context.count == 8 ? context.reduce(0) { $0 << 8 | UInt64($1) } : nil
    }

    private func processReadies() throws {
        assert(loopThread.isOwner, "engine state touched off the loop thread")
        var rounds = 0
        while raft.hasReady {
            rounds += 1
            precondition(rounds < 10_000, "the core produced Readies without end")
            let ready = raft.ready()
            if let soft = ready.softState {
                logger.info("raft role", metadata: ["role": "\(soft.role.rawValue)", "leader": "\(soft.leader)", "term": "\(raft.term)",
                                                   "commit": "\(raft.commitIndex)"])
            }
            send(ready.messages)
            if ready.needsPersist {
                let started = DispatchTime.now().uptimeNanoseconds
                syncLatency.withLock { $0.begin(.raftLog, at: started) }
                try FaultHooks.shared.beforeSync()
                try log.save(ready)
                let finished = DispatchTime.now().uptimeNanoseconds
                syncLatency.withLock { $0.end(.raftLog, at: finished) }
                metrics.persistDuration.recordNanoseconds(Int64(finished - started))
            }
            send(ready.messagesAfterPersist)
            try apply(ready)
            raft.advance(ready)
            for index in raft.takeIgnoredChanges() {
                logger.error("skipped a committed membership change that does not decode", metadata: ["index": "\(index)"])
            }
            answerReads()
            resolveTransfers()
            if membershipChanged || ready.snapshot != nil {
                membershipChanged = false
                publishStatus()
                onMembershipApplied?(status)
            }
            for (index, waiter) in appliedChanges { waiter.succeed(ProposalResult(index: index, outcome: nil)) }
            appliedChanges = []
        }
    }

    private func send(_ messages: [Message]) {
        guard !messages.isEmpty else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        for message in messages where message.kind == .heartbeat && heartbeatSentAt[message.to] == nil {
            heartbeatSentAt[message.to] = now
        }
        for peer in transport.send(messages) { raft.reportUnreachable(peer: peer) }
    }

    private func apply(_ ready: Ready) throws {
        if let snapshot = ready.snapshot {
            try kv.restore(from: snapshot.data, expectedIndex: snapshot.metadata.index)
            status.snapshotsInstalled += 1
            logger.info("installed a snapshot from the leader", metadata: ["index": "\(snapshot.metadata.index)", "term": "\(snapshot.metadata.term)"])
            // Proposals at or below the snapshot cannot be matched to their outcome any more.
            for index in proposals.keys.sorted() where index <= snapshot.metadata.index {
                proposals.removeValue(forKey: index)?.fail(.outcomeUnknown)
            }
        }
        for state in ready.readStates {
            guard let readID = Self.readID(state.context), let batch = reads.removeValue(forKey: readID) else { continue }
            readsAwaitingApply += batch.waiters.map { (state.index, $0) }
        }
        guard let first = ready.committedEntries.first else { return }
        // Committed entries come in order, without a gap, right after what is applied (those at
        // or below it are replays after a restart, which the state machine skips).
        assert(first.index <= kv.appliedIndex + 1, "committed entry \(first.index) after applied \(kv.appliedIndex): a gap")
        assert(zip(ready.committedEntries, ready.committedEntries.dropFirst()).allSatisfy { $0.index + 1 == $1.index },
               "committed entries out of sequence")
        let started = DispatchTime.now().uptimeNanoseconds
        let outcomes = Dictionary(uniqueKeysWithValues: try kv.apply(ready.committedEntries).map { ($0.index, $0.outcome) })
        let now = DispatchTime.now().uptimeNanoseconds
        metrics.applyDuration.recordNanoseconds(Int64(now - started))
        for entry in ready.committedEntries {
            if let waiter = proposals.removeValue(forKey: entry.index) {
                assert(waiter.index == entry.index, "the waiter at \(entry.index) was registered for \(waiter.index)")
                if waiter.term == entry.term {
                    metrics.proposalDuration.recordNanoseconds(Int64(now - min(waiter.startedAt, now)))
                    waiter.succeed(ProposalResult(index: entry.index, outcome: outcomes[entry.index]))
                } else {
                    waiter.fail(.outcomeUnknown)
                }
            }
            if let waiter = changes.removeValue(forKey: entry.index) {
                // Answered after `advance`, once the core and the published status show the change.
                if waiter.term == entry.term { appliedChanges.append((entry.index, waiter)) } else { waiter.fail(.outcomeUnknown) }
            }
            if entry.kind == .configurationChange || outcomes[entry.index] == .memberRecorded { membershipChanged = true }
        }
    }

    /// Set when a membership change or a member's addresses were applied.
    private var membershipChanged = false
    /// Called on the loop thread after a membership change or member addresses were applied.
    public var onMembershipApplied: (@Sendable (EngineStatus) -> Void)?

    private func answerReads() {
        guard !readsAwaitingApply.isEmpty else { return }
        let applied = kv.appliedIndex
        readsAwaitingApply.removeAll { pending in
            guard pending.index <= applied else { return false }
            let now = DispatchTime.now().uptimeNanoseconds
            metrics.readIndexDuration.recordNanoseconds(Int64(now - min(pending.waiter.startedAt, now)))
            pending.waiter.succeed(())
            return true
        }
    }

    private func resolveTransfers() {
        transferWaiters.removeAll { pending in
            if raft.leader == pending.target && raft.role != .leader {
                pending.waiter.succeed(())
                return true
            }
            if raft.role == .leader && raft.transferee == 0 && pending.target != id {
                pending.waiter.fail(.busy("leadership transfer to \(pending.target) did not complete; it may not be caught up"))
                return true
            }
            return false
        }
    }

    // MARK: - Compaction

    private func compactIfDue() throws {
        guard kv.appliedIndex >= log.snapshotMetadata.index + options.snapshotEveryEntries else { return }
        _ = try compact()
    }

    private func compact() throws -> SnapshotMetadata {
        let applied = kv.appliedIndex
        guard applied > log.snapshotMetadata.index, let term = log.term(at: applied) else { return log.snapshotMetadata }
        try kv.syncApplied()
        let (position, data) = try kv.snapshotData()
        precondition(position.index == applied, "state machine moved while the loop compacted")
        let metadata = SnapshotMetadata(index: applied, term: term, configuration: raft.configuration)
        try log.compact(to: Snapshot(metadata: metadata, data: data))
        status.compactions += 1
        logger.info("compacted the raft log", metadata: ["index": "\(applied)", "snapshot_bytes": "\(data.count)"])
        return metadata
    }

    // MARK: - Deadlines, failure, status

    private func sweepExpired(now: UInt64) {
        for (index, waiter) in proposals where waiter.deadline <= now {
            proposals[index] = nil
            waiter.fail(.timedOut)
        }
        for (index, waiter) in changes where waiter.deadline <= now {
            changes[index] = nil
            waiter.fail(.timedOut)
        }
        for (readID, batch) in reads {
            let (expired, live) = (batch.waiters.filter { $0.deadline <= now }, batch.waiters.filter { $0.deadline > now })
            for waiter in expired { waiter.fail(.timedOut) }
            reads[readID] = live.isEmpty ? nil : (live, batch.sentAtTick)
        }
        readsAwaitingApply.removeAll { pending in
            guard pending.waiter.deadline <= now else { return false }
            pending.waiter.fail(.timedOut)
            return true
        }
        transferWaiters.removeAll { pending in
            guard pending.waiter.deadline <= now else { return false }
            pending.waiter.fail(.timedOut)
            return true
        }
        // A read index the leader dropped (it had not yet committed in its term, or the
        // request was lost) is asked for again every few ticks.
        for (readID, batch) in reads where raft.leader != 0 && tickCount >= batch.sentAtTick + 3 {
            try? raft.requestRead(context: Self.context(readID))
            reads[readID] = (batch.waiters, tickCount)
        }
    }

    private func fail(_ error: any Error) {
        logger.critical("storage failed; this member stops serving", metadata: ["error": "\(error)"])
        status.failure = "\(error)"
        publishStatus()
        failAll(.storage("\(error)"))
    }

    private func failAll(_ error: EngineError) {
        for waiter in proposals.values { waiter.fail(error) }
        for waiter in changes.values { waiter.fail(error) }
        for batch in reads.values { for waiter in batch.waiters { waiter.fail(error) } }
        for waiter in newReads { waiter.fail(error) }
        newReads = []
        for pending in readsAwaitingApply { pending.waiter.fail(error) }
        for pending in transferWaiters { pending.waiter.fail(error) }
        for (_, waiter) in appliedChanges { waiter.fail(error) }
        appliedChanges = []
        proposals = [:]
        changes = [:]
        reads = [:]
        readsAwaitingApply = []
        transferWaiters = []
        for event in inbox.drain() { event.fail(error) }
    }

    private func publishStatus() {
        status.role = raft.role
        status.term = raft.term
        status.leader = raft.leader
        status.commitIndex = raft.commitIndex
        status.appliedIndex = kv.appliedIndex
        status.logClockMillis = kv.position.logClockMillis
        status.firstIndex = raft.firstIndex
        status.lastIndex = raft.lastIndex
        status.snapshotIndex = log.snapshotMetadata.index
        status.voters = raft.configuration.voters
        status.learners = raft.configuration.learners
        status.matchIndexes = raft.matchIndexes
        let now = DispatchTime.now().uptimeNanoseconds
        status.lastContactMilliseconds = lastContact.mapValues { (now - min($0, now)) / 1_000_000 }
        status.roundTripMicroseconds = raft.role == .leader ? roundTrips : [:]
        let waiting = inbox.counts
        status.refusedBusyRequests = waiting.refusedRequests
        status.droppedMessageBatches = waiting.droppedMessageBatches
        let snapshot = status
        published.withLock { $0 = snapshot }
    }

    static func translate(_ error: RaftError, leader: NodeID) -> EngineError {
        switch error {
        case .notLeader(let hint): return .notLeader(leaderHint: hint)
        case .transferInProgress: return .busy("a leadership transfer is in progress")
        case .tooManyUncommittedBytes: return .busy("too much data is waiting to commit")
        case .configurationChangePending: return .busy("a membership change is still being applied")
        case .invalidConfigurationChange(let why), .invalidTransferTarget(let why): return .invalid(why)
        }
    }

    static func translate(_ error: any Error, leader: NodeID) -> EngineError {
        if let raftError = error as? RaftError { return translate(raftError, leader: leader) }
        return .invalid("\(error)")
    }
}

extension RaftEngine: PeerTransportDelegate {
    public func peerTransport(received messages: [Message], from peer: NodeID) { received(messages, from: peer) }
    public func peerTransport(snapshotTo peer: NodeID, delivered: Bool) { snapshotReport(peer: peer, delivered: delivered) }
}
