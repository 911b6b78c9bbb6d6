import KVStore
import Logging
@_spi(Simulation) import Raft

/// What a member does with its consensus core, deterministically: feed it messages, proposals,
/// reads and ticks; work through its `Ready`s in the order the core requires (send what may
/// precede the write, persist, send what depended on it, apply, advance); answer proposers when
/// their entry is applied, readers when their read index is applied, transfers when the target
/// leads; fail what can no longer succeed; compact the log when due.
///
/// It owns no thread, clock or socket: a member runs it on the Raft thread with the real clock,
/// the durable log and the peer transport (`RaftEngine`); the simulator runs the very same loop
/// with simulated time, disk and network, so every simulated seed tests this code.
///
/// Not thread-safe: one thread (or one simulated scheduler) calls everything.
public final class MemberLoop {
    public struct Options: Sendable {
        /// Entries applied since the last snapshot before the log is compacted.
        public var snapshotEveryEntries: UInt64 = 10_000
        /// A read index the leader did not answer (it dropped it, or the request was lost) is
        /// asked for again after this many ticks.
        public var readRetryTicks: UInt64 = 3
        /// The state pinned at the log's snapshot is released after this many ticks without a
        /// snapshot sent from it (a pinned view holds old versions and delays the retirement of
        /// rotated data keys); the next follower that needs one gets a fresh compaction.
        public var pinnedStateTicks: UInt64 = 1_200
        /// Most proposals a follower keeps waiting after forwarding them to the leader.
        public var maxForwardedProposals = 4_096

        public init() {}
    }

    public let id: NodeID
    public let kv: ReplicatedKV
    public let raft: RaftNode
    let log: any LogWriter
    let outbox: any Outbox
    /// Snapshots received from leaders, kept until installed (nil: they are in the log).
    let received: (any ReceivedSnapshots)?
    let clock: any MonotonicClock
    let options: Options
    let logger: Logger
    let plantedBug: PlantedBug?
    public weak var observer: (any MemberLoopObserver)?

    /// Proposals by log index, with the term they were appended in: an entry of another term
    /// at that index means the proposal was replaced.
    private var proposals: [UInt64: (waiter: ProposalWaiter, term: UInt64)] = [:]
    private var changes: [UInt64: (waiter: ProposalWaiter, term: UInt64)] = [:]
    /// Session writes this follower forwarded to the leader through the log's own messages,
    /// with the term they were forwarded in: answered when the write is applied here.
    private var forwarded: [SessionWrite: [(waiter: ProposalWaiter, term: UInt64)]] = [:]
    private var forwardedCount = 0
    /// The term in which no forwarded write was older than the term: until the term changes,
    /// there is nothing for `failForwardedFromEarlierTerms` to do.
    private var forwardedCheckedTerm: UInt64 = 0
    /// Changes applied in the current Ready: answered after `advance`, once the core shows them.
    private var appliedChanges: [(index: UInt64, waiter: ProposalWaiter)] = []
    /// Reads that arrived since the last ReadIndex request: they share the next one.
    private var newReads: [ReadWaiter] = []
    /// ReadIndex requests in flight, by id, with the tick they were (re)sent at.
    private var reads: [UInt64: (waiters: [ReadWaiter], sentAtTick: UInt64)] = [:]
    private var readsAwaitingApply: [(index: UInt64, waiter: ReadWaiter)] = []
    private var transfers: [(target: NodeID, waiter: TransferWaiter)] = []
    private var nextReadID: UInt64 = 1
    /// Drawn at start and sent with every read id: a read index answered to an earlier run of
    /// this member (delayed in the network past a restart) cannot answer a read of this one.
    private let readNonce: UInt64
    private var tickCount: UInt64 = 0
    /// A Ready whose write is in flight (`LogWriteProgress.inFlight`): nothing more is taken
    /// from the core until it completes.
    private var writing: Ready?
    private var membershipChanged = false
    private var lastContact: [NodeID: UInt64] = [:]
    /// When the outstanding heartbeat to each peer was sent, and the latest round trips.
    private var heartbeatSentAt: [NodeID: UInt64] = [:]
    private var roundTrips: [NodeID: UInt64] = [:]
    private var counters = Counters()
    /// When a refused peer message was last logged: at most one line a second, the rest counted.
    private var lastRefusalLogAt: UInt64?
    private var refusalsNotLogged = 0
    /// The state machine at exactly the log's snapshot index, read when a follower needs a
    /// snapshot (the log stores only the snapshot's metadata), and the tick it was last used.
    private var pinned: (state: PinnedState, usedAtTick: UInt64)?
    /// A follower needs a snapshot the pinned state cannot give: compact at the next chance.
    private var compactionWanted = false

    private struct Counters {
        var snapshotsSent = 0
        var snapshotsInstalled = 0
        var compactions = 0
        var forwardedWrites = 0
        var refusedPeerMessages = 0
    }

    /// Builds the loop on an opened log and state machine. A state machine behind the log's
    /// snapshot (a restore cut short by a crash) is restored from that snapshot first.
    public init(
        config: RaftConfig, log: any LogWriter, kv: ReplicatedKV, outbox: any Outbox, clock: any MonotonicClock,
        options: Options = Options(), random: any RandomSource, received: (any ReceivedSnapshots)? = nil,
        logger: Logger
    ) throws {
        if kv.appliedIndex < log.snapshotMetadata.index {
            // Only a snapshot received from a leader can be cut short by a crash (a local
            // compaction syncs the state machine before the log forgets); its data is in the
            // log (the simulator, older logs) or among the received snapshots.
            let metadata = log.snapshotMetadata
            var snapshot = log.snapshot()
            if !snapshot.hasData, let received = try received?.snapshot(at: metadata) {
                snapshot.source = received
            }
            guard snapshot.hasData else {
                throw EngineError.storage(
                    "the state machine is at \(kv.appliedIndex), behind the log's snapshot at \(metadata.index), whose data is neither in the log nor among the received snapshots"
                )
            }
            try kv.restore(from: snapshot, expectedIndex: metadata.index)
        }
        received?.discard(through: kv.appliedIndex)
        self.received = received
        id = config.id
        self.kv = kv
        self.log = log
        self.outbox = outbox
        self.clock = clock
        self.options = options
        self.logger = logger
        plantedBug = config.plantedBug
        var random = random
        readNonce = random.next()
        raft = RaftNode(config: config, store: log, hardState: log.hardState, random: random)
        assert(
            kv.appliedIndex >= log.snapshotMetadata.index,
            "state machine at \(kv.appliedIndex) behind the log's snapshot")
    }

    // MARK: - Inputs

    /// Peer messages as they arrived from `peer`; the core refuses what no honest member sends
    /// (the reason for the last refusal is returned, for the simulator, whose peers are honest).
    @discardableResult
    public func receive(_ messages: [Message], from peer: NodeID) -> String? {
        let now = clock.nanoseconds
        lastContact[peer] = now
        if let sent = heartbeatSentAt[peer], messages.contains(where: { $0.kind == .heartbeatResponse }) {
            roundTrips[peer] = (now - min(sent, now)) / 1000
            heartbeatSentAt[peer] = nil
        }
        var refusal: String?
        for message in messages where message.to == id {
            if let reason = snapshotRefusal(message) ?? stepRefusal(message) {
                noteRefused(message, from: peer, reason: reason, now: now)
                refusal = reason
            }
        }
        return refusal
    }

    /// Proposes `data` on the leader. On a follower that knows the leader, a session write
    /// (`forwardable`) is forwarded to it in a proposal message and answered when it is applied
    /// here; anything else is refused naming the leader (the caller routes it).
    public func propose(_ data: [UInt8], _ waiter: ProposalWaiter, forwardable: SessionWrite? = nil) {
        if raft.role != .leader {
            guard let forwardable, raft.leader != 0, raft.leader != id, raft.config.forwardProposals,
                forwardedCount < options.maxForwardedProposals
            else {
                waiter.fail(
                    forwardedCount >= options.maxForwardedProposals
                        ? .busy("too many writes are waiting for the leader") : .notLeader(leaderHint: raft.leader))
                return
            }
            do {
                guard case .forwarded = try raft.propose(data) else {
                    preconditionFailure("a follower appended a proposal")
                }
                forwarded[forwardable, default: []].append((waiter, raft.term))
                forwardedCount += 1
                counters.forwardedWrites += 1
            } catch {
                waiter.fail(Self.translate(error))
            }
            return
        }
        do {
            switch try raft.propose(data) {
            case .appended(let index, let term):
                failReplaced(at: index, term: term)
                proposals[index] = (waiter, term)
            case .forwarded:
                preconditionFailure("the leader forwarded a proposal")
            }
        } catch {
            waiter.fail(Self.translate(error))
        }
    }

    /// Forwarded proposals of an earlier term: the leader they went to may have lost them, or
    /// they may still commit; their callers learn that the outcome is unknown (a session write
    /// is safe to send again: a retry is answered from the session).
    private func failForwardedFromEarlierTerms() {
        guard forwardedCount > 0, raft.term != forwardedCheckedTerm else { return }
        forwardedCheckedTerm = raft.term
        let term = raft.term
        failForwarded(.outcomeUnknown) { $0.term < term }
    }

    /// Fails the forwarded writes that `matches` picks with `error`, in key order (the same run
    /// answers its callers in the same order), and forgets them.
    private func failForwarded(
        _ error: EngineError, where matches: ((waiter: ProposalWaiter, term: UInt64)) -> Bool = { _ in true }
    ) {
        guard forwardedCount > 0 else { return }
        for key in forwarded.keys.sorted(by: Self.sessionWriteOrder) {
            let waiting = forwarded[key]!
            let live = waiting.filter { !matches($0) }
            guard live.count < waiting.count else { continue }
            for pending in waiting where matches(pending) { pending.waiter.fail(error) }
            forwardedCount -= waiting.count - live.count
            forwarded[key] = live.isEmpty ? nil : live
        }
        assert(forwardedCount == forwarded.values.reduce(0) { $0 + $1.count }, "forwarded writes miscounted")
    }

    private static func sessionWriteOrder(_ a: SessionWrite, _ b: SessionWrite) -> Bool {
        (a.session, a.sequence) < (b.session, b.sequence)
    }

    /// A leader appending at `index` in `term` has no entry of an earlier term there any more:
    /// a proposal this member made at that index as an earlier leader was replaced (its entry
    /// was truncated before it committed), so its caller learns that the outcome is unknown.
    private func failReplaced(at index: UInt64, term: UInt64) {
        if let replaced = proposals.removeValue(forKey: index) {
            assert(replaced.term < term, "two proposals at index \(index) in term \(term)")
            replaced.waiter.fail(.outcomeUnknown)
        }
        if let replaced = changes.removeValue(forKey: index) {
            assert(replaced.term < term, "two membership changes at index \(index) in term \(term)")
            replaced.waiter.fail(.outcomeUnknown)
        }
    }

    /// A linearizable read: answered once this member has applied everything committed before
    /// it arrived (one ReadIndex request serves every read that arrived since the last).
    public func read(_ waiter: ReadWaiter) {
        newReads.append(waiter)
    }

    public func changeMembership(_ change: ConfigurationChange, _ waiter: ProposalWaiter) {
        do {
            let index = try raft.proposeChange(change)
            failReplaced(at: index, term: raft.term)
            changes[index] = (waiter, raft.term)
        } catch {
            waiter.fail(Self.translate(error))
        }
    }

    public func transferLeadership(to target: NodeID, _ waiter: TransferWaiter) {
        do {
            try raft.transferLeadership(to: target)
            transfers.append((target, waiter))
        } catch {
            waiter.fail(Self.translate(error))
        }
    }

    /// Whether a snapshot sent to `peer` arrived.
    public func snapshotReport(peer: NodeID, delivered: Bool) {
        raft.reportSnapshot(peer: peer, delivered: delivered)
        if delivered { counters.snapshotsSent += 1 }
    }

    /// One tick of the member's clock (elections, heartbeats, lease and read-index retries).
    public func tick() {
        raft.tick()
        tickCount += 1
        if let pinned, tickCount - pinned.usedAtTick > options.pinnedStateTicks { self.pinned = nil }
    }

    // MARK: - Driving

    /// Asks for a read index for the reads that arrived, then works through the core's Readies
    /// until none is left or a write is in flight, then compacts the log if due.
    public func drive() throws {
        requestReads()
        var rounds = 0
        while writing == nil && raft.hasReady {
            rounds += 1
            precondition(rounds < 10_000, "the core produced Readies without end")
            let ready = raft.ready()
            try observer?.loopTook(ready)
            if let soft = ready.softState {
                logger.info(
                    "raft role",
                    metadata: [
                        "role": "\(soft.role.rawValue)", "leader": "\(soft.leader)", "term": "\(raft.term)",
                        "commit": "\(raft.commitIndex)",
                    ])
            }
            try send(ready.messages)
            // A received snapshot's data is made durable before the log records it as its own.
            try ready.snapshot?.source?.makeDurable()
            if ready.needsPersist, try log.write(ready) == .inFlight {
                writing = ready
                return
            }
            try finish(ready)
        }
        try compactIfDue()
    }

    /// The write of the Ready in flight is durable: send what waited for it, apply, advance.
    /// Call `drive()` afterwards for what the core has next.
    public func writeCompleted() throws {
        guard let ready = writing else { preconditionFailure("no write is in flight") }
        writing = nil
        try finish(ready)
    }

    public var isWriting: Bool { writing != nil }

    private func finish(_ ready: Ready) throws {
        try send(ready.messagesAfterPersist)
        try apply(ready)
        raft.advance(ready)
        for index in raft.takeIgnoredChanges() {
            logger.error("skipped a committed membership change that does not decode", metadata: ["index": "\(index)"])
        }
        answerReads()
        resolveTransfers()
        failForwardedFromEarlierTerms()
        if membershipChanged || ready.snapshot != nil {
            membershipChanged = false
            observer?.loopAppliedMembership(status())
        }
        for (index, waiter) in appliedChanges { waiter.succeed(ProposalResult(index: index, outcome: nil)) }
        appliedChanges = []
    }

    private func send(_ messages: [Message]) throws {
        guard !messages.isEmpty else { return }
        let now = clock.nanoseconds
        for message in messages where message.kind == .heartbeat && heartbeatSentAt[message.to] == nil {
            heartbeatSentAt[message.to] = now
        }
        for peer in try outbox.send(withSnapshotData(messages)) { raft.reportUnreachable(peer: peer) }
    }

    /// Snapshot messages from the core carry the log's snapshot metadata only: their data is
    /// streamed by the transport from the state pinned at that index (which the stream holds
    /// until it is done). One the pinned state cannot serve is dropped and reported
    /// undelivered (the core tries again later), and a compaction is asked for.
    private func withSnapshotData(_ messages: [Message]) -> [Message] {
        guard messages.contains(where: { $0.kind == .snapshot }) else { return messages }
        return messages.compactMap { message in
            guard message.kind == .snapshot, let snapshot = message.snapshot else { return message }
            guard let state = pinnedState(at: snapshot.metadata.index) else {
                raft.reportSnapshot(peer: message.to, delivered: false)
                return nil
            }
            var filled = message
            filled.snapshot = Snapshot(metadata: snapshot.metadata, data: [], source: state)
            return filled
        }
    }

    private func pinnedState(at index: UInt64) -> PinnedState? {
        if pinned?.state.position.index != index {
            pinned = nil
            guard kv.appliedIndex == index, let state = try? kv.pinState(), state.position.index == index else {
                compactionWanted = true
                return nil
            }
            pinned = (state, tickCount)
        }
        pinned!.usedAtTick = tickCount
        return pinned!.state
    }

    /// Why a snapshot from the leader is refused before the core sees it: its data does not
    /// decode, or is not at the index its metadata names. Checked only for a snapshot the core
    /// could accept (beyond the commit index), as reading one through costs a full pass.
    private func snapshotRefusal(_ message: Message) -> String? {
        guard message.kind == .snapshot, let snapshot = message.snapshot, snapshot.metadata.index > raft.commitIndex
        else { return nil }
        do {
            try kv.check(snapshot: snapshot, expectedIndex: snapshot.metadata.index)
            return nil
        } catch {
            return "the snapshot at \(snapshot.metadata.index) does not decode: \(error)"
        }
    }

    private func stepRefusal(_ message: Message) -> String? {
        if case .refused(let reason) = raft.step(message) { return reason }
        return nil
    }

    /// One ReadIndex request for every read that arrived since the last.
    private func requestReads() {
        guard !newReads.isEmpty else { return }
        let batch = newReads
        newReads = []
        let readID = nextReadID
        nextReadID += 1
        do {
            try raft.requestRead(context: context(readID))
            reads[readID] = (batch, tickCount)
        } catch {
            let failure = Self.translate(error)
            for waiter in batch { waiter.fail(failure) }
        }
    }

    /// A read request's context: this run's nonce, then the read id (big-endian).
    func context(_ readID: UInt64) -> [UInt8] { Self.bigEndian(readNonce) + Self.bigEndian(readID) }

    /// The read id in `context`, if it names a read of this run.
    func readID(_ context: [UInt8]) -> UInt64? {
        guard context.count == 16, context.prefix(8).elementsEqual(Self.bigEndian(readNonce)) else { return nil }
        return context.suffix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    private static func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    // MARK: - Applying

    private func apply(_ ready: Ready) throws {
        if let snapshot = ready.snapshot { try install(snapshot) }
        for state in ready.readStates {
            guard let readID = readID(state.context), let batch = reads.removeValue(forKey: readID) else { continue }
            readsAwaitingApply += batch.waiters.map { (state.index, $0) }
        }
        guard let first = ready.committedEntries.first else { return }
        // Committed entries come in order, without a gap, right after what is applied (those at
        // or below it are replays after a restart, which the state machine skips).
        assert(
            first.index <= kv.appliedIndex + 1, "committed entry \(first.index) after applied \(kv.appliedIndex): a gap"
        )
        assert(
            zip(ready.committedEntries, ready.committedEntries.dropFirst()).allSatisfy { $0.index + 1 == $1.index },
            "committed entries out of sequence")
        try observer?.loopWillApply(ready.committedEntries)
        let started = clock.nanoseconds
        let applied = try kv.apply(ready.committedEntries)
        let outcomes = Dictionary(uniqueKeysWithValues: applied.map { ($0.index, $0.outcome) })
        if forwardedCount > 0 {
            for result in applied {
                guard let key = result.sessionWrite, let waiting = forwarded.removeValue(forKey: key) else { continue }
                forwardedCount -= waiting.count
                for pending in waiting {
                    pending.waiter.succeed(ProposalResult(index: result.index, outcome: result.outcome))
                }
            }
        }
        observer?.loopApplied(ready.committedEntries, nanoseconds: clock.nanoseconds - min(started, clock.nanoseconds))
        assert(
            kv.appliedIndex >= ready.committedEntries.last!.index,
            "applied \(kv.appliedIndex) short of the committed entries")
        for entry in ready.committedEntries {
            if let pending = proposals.removeValue(forKey: entry.index) {
                if pending.term == entry.term || plantedBug == .waiterIgnoresTerm {
                    pending.waiter.succeed(ProposalResult(index: entry.index, outcome: outcomes[entry.index]))
                } else {
                    pending.waiter.fail(.outcomeUnknown)
                }
            }
            if let pending = changes.removeValue(forKey: entry.index) {
                if pending.term == entry.term {
                    appliedChanges.append((entry.index, pending.waiter))
                } else {
                    pending.waiter.fail(.outcomeUnknown)
                }
            }
            if entry.kind == .configurationChange || outcomes[entry.index] == .memberRecorded {
                membershipChanged = true
            }
        }
    }

    private func install(_ snapshot: Snapshot) throws {
        try kv.restore(from: snapshot, expectedIndex: snapshot.metadata.index)
        received?.discard(through: snapshot.metadata.index)
        let state = try kv.pinState()
        precondition(state.position.index == snapshot.metadata.index, "restored state not at the snapshot's index")
        try observer?.loopHolds(snapshot.metadata, state: state)
        pinned = (state, tickCount)
        counters.snapshotsInstalled += 1
        logger.info(
            "installed a snapshot from the leader",
            metadata: ["index": "\(snapshot.metadata.index)", "term": "\(snapshot.metadata.term)"])
        // Forwarded writes the snapshot covered are not applied here one by one: their
        // outcome is in the sessions, where a retry finds it.
        failForwarded(.outcomeUnknown)
        // Proposals at or below the snapshot cannot be matched to their outcome any more.
        for index in proposals.keys.sorted() where index <= snapshot.metadata.index {
            proposals.removeValue(forKey: index)?.waiter.fail(.outcomeUnknown)
        }
        for index in changes.keys.sorted() where index <= snapshot.metadata.index {
            changes.removeValue(forKey: index)?.waiter.fail(.outcomeUnknown)
        }
    }

    private func answerReads() {
        guard !readsAwaitingApply.isEmpty else { return }
        let applied = kv.appliedIndex
        readsAwaitingApply.removeAll { pending in
            guard pending.index <= applied || plantedBug == .readBeforeApplied else { return false }
            pending.waiter.succeed(pending.index)
            return true
        }
    }

    private func resolveTransfers() {
        transfers.removeAll { pending in
            if raft.leader == pending.target && raft.role != .leader {
                pending.waiter.succeed(())
                return true
            }
            if raft.role == .leader && raft.transferee == 0 && pending.target != id {
                pending.waiter.fail(
                    .busy("leadership transfer to \(pending.target) did not complete; it may not be caught up"))
                return true
            }
            return false
        }
    }

    // MARK: - Compaction

    private func compactIfDue() throws {
        guard compactionWanted || kv.appliedIndex >= log.snapshotMetadata.index + options.snapshotEveryEntries
        else { return }
        let metadata = try compact()
        if metadata.index == kv.appliedIndex { compactionWanted = false }
    }

    /// Compacts the log up to the applied index: the state machine is synced, pinned at that
    /// index (for followers that will need a snapshot), and the log keeps only the snapshot's
    /// metadata — the state is never copied, whatever its size. Waits (returns the current
    /// snapshot) while a write is in flight or the core holds a snapshot it has not handed out:
    /// its configuration is then not the one at the applied index.
    @discardableResult
    public func compact() throws -> SnapshotMetadata {
        let applied = kv.appliedIndex
        guard writing == nil, !raft.hasPendingSnapshot, applied > log.snapshotMetadata.index,
            let term = log.term(at: applied)
        else { return log.snapshotMetadata }
        try kv.syncApplied()
        let state = try kv.pinState()
        precondition(state.position.index == applied, "state machine moved while the loop compacted")
        let metadata = SnapshotMetadata(index: applied, term: term, configuration: raft.configuration)
        try observer?.loopHolds(metadata, state: state)
        try log.compact(to: Snapshot(metadata: metadata, data: []))
        pinned = (state, tickCount)
        counters.compactions += 1
        logger.info("compacted the raft log", metadata: ["index": "\(applied)"])
        return metadata
    }

    // MARK: - Deadlines and failure

    /// Fails every waiter whose deadline has passed, and asks again for read indexes the
    /// leader has not answered for a few ticks.
    public func expireWaiters() {
        // In key order, here and below: the same run answers its callers in the same order
        // (dictionaries iterate in an order of their own, even two with the same keys).
        let now = clock.nanoseconds
        for index in proposals.keys.sorted() where proposals[index]!.waiter.deadline <= now {
            proposals.removeValue(forKey: index)!.waiter.fail(.timedOut)
        }
        for index in changes.keys.sorted() where changes[index]!.waiter.deadline <= now {
            changes.removeValue(forKey: index)!.waiter.fail(.timedOut)
        }
        failForwarded(.timedOut) { $0.waiter.deadline <= now }
        for readID in reads.keys.sorted() {
            let batch = reads[readID]!
            let (expired, live) = (
                batch.waiters.filter { $0.deadline <= now }, batch.waiters.filter { $0.deadline > now }
            )
            for waiter in expired { waiter.fail(.timedOut) }
            reads[readID] = live.isEmpty ? nil : (live, batch.sentAtTick)
        }
        readsAwaitingApply.removeAll { pending in
            guard pending.waiter.deadline <= now else { return false }
            pending.waiter.fail(.timedOut)
            return true
        }
        transfers.removeAll { pending in
            guard pending.waiter.deadline <= now else { return false }
            pending.waiter.fail(.timedOut)
            return true
        }
        for readID in reads.keys.sorted()
        where raft.leader != 0 && tickCount >= reads[readID]!.sentAtTick + options.readRetryTicks {
            try? raft.requestRead(context: context(readID))
            reads[readID]!.sentAtTick = tickCount
        }
    }

    /// Answers every waiting caller with `error` (the member stops, or its storage failed).
    public func failAll(_ error: EngineError) {
        for index in proposals.keys.sorted() { proposals[index]!.waiter.fail(error) }
        for index in changes.keys.sorted() { changes[index]!.waiter.fail(error) }
        for readID in reads.keys.sorted() { for waiter in reads[readID]!.waiters { waiter.fail(error) } }
        for waiter in newReads { waiter.fail(error) }
        for pending in readsAwaitingApply { pending.waiter.fail(error) }
        for pending in transfers { pending.waiter.fail(error) }
        for (_, waiter) in appliedChanges { waiter.fail(error) }
        failForwarded(error)
        proposals = [:]
        changes = [:]
        reads = [:]
        newReads = []
        readsAwaitingApply = []
        transfers = []
        appliedChanges = []
    }

    // MARK: - Status

    /// The member's state as the loop sees it now.
    public func status() -> EngineStatus {
        var status = EngineStatus(id: id)
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
        let now = clock.nanoseconds
        status.lastContactMilliseconds = lastContact.mapValues { (now - min($0, now)) / 1_000_000 }
        status.roundTripMicroseconds = raft.role == .leader ? roundTrips : [:]
        status.snapshotsSent = counters.snapshotsSent
        status.snapshotsInstalled = counters.snapshotsInstalled
        status.compactions = counters.compactions
        status.forwardedWrites = counters.forwardedWrites
        status.refusedPeerMessages = counters.refusedPeerMessages
        return status
    }

    /// A peer's message the core refused (see `RaftNode.step`): counted in the status, logged
    /// at most once a second so that a hostile peer cannot flood the log.
    private func noteRefused(_ message: Message, from peer: NodeID, reason: String, now: UInt64) {
        counters.refusedPeerMessages += 1
        if let last = lastRefusalLogAt, now < last + 1_000_000_000 {
            refusalsNotLogged += 1
            return
        }
        logger.warning(
            "refused a peer message",
            metadata: [
                "peer": "\(peer)", "kind": "\(message.kind.rawValue)", "term": "\(message.term)", "reason": "\(reason)",
                "refused_since_last_line": "\(refusalsNotLogged)",
            ])
        lastRefusalLogAt = now
        refusalsNotLogged = 0
    }

    static func translate(_ error: RaftError) -> EngineError {
        switch error {
        case .notLeader(let hint): return .notLeader(leaderHint: hint)
        case .transferInProgress: return .busy("a leadership transfer is in progress")
        case .tooManyUncommittedBytes: return .busy("too much data is waiting to commit")
        case .configurationChangePending: return .busy("a membership change is still being applied")
        case .invalidConfigurationChange(let why), .invalidTransferTarget(let why): return .invalid(why)
        }
    }

    static func translate(_ error: any Error) -> EngineError {
        if let raftError = error as? RaftError { return translate(raftError) }
        return .invalid("\(error)")
    }
}
