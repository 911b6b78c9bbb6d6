/// One member of a Raft group as a pure, deterministic state machine.
///
/// Inputs: `tick()`, `step(_:)` (a peer's message), `propose(_:)`, `proposeChange(_:)`,
/// `requestRead(context:)`, `transferLeadership(to:)`. Output: `ready()`, which says what to
/// persist, send and apply; the caller does that and calls `advance(_:)`. No I/O, no clock, no
/// randomness of its own: the same inputs always give the same outputs.
public final class RaftNode {
    public let config: RaftConfig
    public private(set) var term: UInt64
    public private(set) var vote: NodeID
    public private(set) var leader: NodeID = 0
    public private(set) var role: Role = .follower
    public private(set) var configuration: Configuration

    var log: RaftLog
    var progress: [NodeID: Progress] = [:]
    private var random: any RandomSource
    private var votes: [NodeID: Bool] = [:]
    /// The request of the campaign in progress (nil unless campaigning).
    private var campaignRequest: CampaignRequest?
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout = 0
    /// Target of a leadership transfer in progress, or 0.
    public private(set) var transferee: NodeID = 0
    /// Index of the last membership change appended; another waits until it is applied.
    private var pendingChangeIndex: UInt64 = 0
    private var uncommittedBytes = 0
    /// Leader only: ticks since it became leader; heartbeats carry it so that their answers date
    /// the lease.
    private(set) var leaseClock: UInt64 = 0
    /// A leadership transfer was started in this term: a forced election may now happen at any
    /// moment, so the lease is not trusted again in this term.
    private var leaseRevoked = false
    /// With lease reads: a member that has just started ignores campaigns until an election
    /// timeout has passed (it may have acknowledged a heartbeat before it stopped).
    private var ignoresCampaignsAfterStart: Bool
    private var readRequests = ReadRequestQueue()

    /// Indexes of committed membership changes that did not decode and were skipped (see
    /// `takeIgnoredChanges`).
    public private(set) var ignoredChanges: [UInt64] = []

    /// The skipped membership changes since the last call, for the caller to report.
    public func takeIgnoredChanges() -> [UInt64] {
        defer { ignoredChanges = [] }
        return ignoredChanges
    }

    private var outbox: [Message] = []
    private var readStates: [ReadState] = []
    /// What the caller has persisted, and what was last handed out in a `Ready`.
    private var persistedHardState: HardState
    private var lastSoftState: SoftState
    private var handedOut: Ready?

    /// Starts (or restarts) a member from its persisted state.
    public init(config: RaftConfig, store: any LogStore, hardState: HardState, random: any RandomSource) {
        config.validate()
        self.config = config
        self.random = random
        log = RaftLog(store: store, committed: hardState.commit)
        term = hardState.term
        vote = config.plantedBug == .forgetVote ? 0 : hardState.vote
        configuration = store.snapshotMetadata.configuration
        persistedHardState = hardState
        lastSoftState = SoftState(leader: 0, role: .follower)
        ignoresCampaignsAfterStart = config.leaseClockDriftBoundTicks != nil
        // Membership changes after the snapshot are re-applied when their entries are applied.
        becomeFollower(term: term, leader: 0)
    }

    public var id: NodeID { config.id }
    public var commitIndex: UInt64 { log.committed }
    public var appliedIndex: UInt64 { log.applied }
    public var lastIndex: UInt64 { log.lastIndex }
    public var firstIndex: UInt64 { log.firstIndex }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    public var softState: SoftState { SoftState(leader: leader, role: role) }
    /// Whether this member may campaign: voters only.
    public var isPromotable: Bool { configuration.isVoter(id) }

    /// Term of the entry at `index` in this member's log (persisted or not); nil if compacted
    /// away or beyond the end.
    public func term(at index: UInt64) -> UInt64? { log.term(at: index) }

    /// A snapshot from the leader is waiting to be handed out in a `Ready` (the applied index
    /// already counts it).
    public var hasPendingSnapshot: Bool { log.pendingSnapshot != nil }

    /// The leader's view of each member's match index (empty unless leader).
    public var matchIndexes: [NodeID: UInt64] { progress.mapValues(\.match) }

    // MARK: - Roles

    private func reset(term newTerm: UInt64) {
        if term != newTerm {
            term = newTerm
            vote = 0
        }
        leader = 0
        electionElapsed = 0
        heartbeatElapsed = 0
        randomizedElectionTimeout =
            config.electionTicks
            + Int(random.next() % UInt64(config.electionTicks))
        votes = [:]
        campaignRequest = nil
        transferee = 0
        readRequests = ReadRequestQueue()
        progress = [:]
        uncommittedBytes = 0
        leaseClock = 0
        leaseRevoked = false
    }

    private func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID) {
        reset(term: newTerm)
        leader = newLeader
        role = .follower
    }

    private func becomePreCandidate() {
        precondition(role != .leader, "a leader does not campaign")
        // Pre-vote changes neither the term nor the vote.
        votes = [:]
        leader = 0
        role = .preCandidate
    }

    private func becomeCandidate() {
        precondition(role != .leader, "a leader does not campaign")
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    private func becomeLeader() {
        precondition(role == .candidate, "only a candidate becomes leader")
        reset(term: term)
        leader = id
        role = .leader
        for member in configuration.members {
            progress[member] = makeProgress(next: log.lastIndex + 1, isLearner: !configuration.isVoter(member))
        }
        // The leader counts only what it has persisted itself (see `advance`).
        progress[id]?.match = persistedLastIndex
        progress[id]?.becomeReplicate()
        // Changes in the uncommitted tail may not be applied yet: wait for them before another.
        pendingChangeIndex = log.lastIndex
        // An empty entry of the new term: entries of older terms commit only through it.
        appendAsLeader([Entry(term: term, index: 0)])
    }

    /// Highest index that is persisted and still part of the log.
    private var persistedLastIndex: UInt64 {
        min(log.store.lastIndex, log.unstableOffset - 1)
    }

    // MARK: - Ticks

    /// Advances logical time by one tick.
    public func tick() {
        electionElapsed += 1
        if electionElapsed >= config.electionTicks { ignoresCampaignsAfterStart = false }
        if role == .leader {
            tickLeader()
        } else if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            campaign(transfer: false)
        } else if role == .candidate || role == .preCandidate {
            tickCampaign()
        }
    }

    /// A campaign asks again, every heartbeat interval, the voters that have not answered: a
    /// lost request or answer then costs a heartbeat interval instead of an election timeout.
    private func tickCampaign() {
        heartbeatElapsed += 1
        guard heartbeatElapsed >= config.heartbeatTicks, let request = campaignRequest else { return }
        heartbeatElapsed = 0
        for voter in configuration.voters.sorted() where voter != id && votes[voter] == nil {
            outbox.append(voteRequest(request, to: voter))
        }
    }

    private func tickLeader() {
        heartbeatElapsed += 1
        leaseClock += 1
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum && !hasActiveQuorum() {
                becomeFollower(term: term, leader: 0)
                return
            }
            transferee = 0 // a transfer that did not finish within an election timeout is abandoned
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat(context: [])
        }
    }

    /// True if a quorum of voters (counting this leader) was heard from since the last check;
    /// clears the marks for the next round.
    private func hasActiveQuorum() -> Bool {
        var active = 0
        for voter in configuration.voters {
            if voter == id || progress[voter]?.recentActive == true { active += 1 }
            progress[voter]?.recentActive = false
        }
        for learner in configuration.learners { progress[learner]?.recentActive = false }
        return active >= configuration.quorum
    }

    // MARK: - Elections

    private func campaign(transfer: Bool) {
        guard isPromotable else { return }
        if config.preVote && !transfer {
            becomePreCandidate()
            requestVotes(kind: .preVote, term: term + 1, transfer: false)
        } else {
            becomeCandidate()
            requestVotes(kind: .vote, term: term, transfer: transfer)
        }
    }

    private func requestVotes(kind: Message.Kind, term voteTerm: UInt64, transfer: Bool) {
        let request = CampaignRequest(kind: kind, term: voteTerm, transfer: transfer)
        campaignRequest = request
        heartbeatElapsed = 0
        // Our own vote first: a single-voter cluster wins at once.
        votes[id] = true
        if checkElection() { return }
        for voter in configuration.voters.sorted() where voter != id {
            outbox.append(voteRequest(request, to: voter))
        }
    }

    /// What the current campaign asks for: a pre-vote or a vote, in which term.
    private struct CampaignRequest {
        var kind: Message.Kind
        var term: UInt64
        var transfer: Bool
    }

    private func voteRequest(_ request: CampaignRequest, to voter: NodeID) -> Message {
        var message = Message(kind: request.kind, from: id, to: voter, term: request.term)
        message.index = log.lastIndex
        message.logTerm = log.lastTerm
        if request.transfer { message.context = Self.transferContext }
        return message
    }

    static let transferContext = Array("transfer".utf8)

    /// Acts on the votes so far; true if the election ended.
    private func checkElection() -> Bool {
        switch configuration.electionResult(votes) {
        case .won:
            if role == .preCandidate {
                becomeCandidate()
                requestVotes(kind: .vote, term: term, transfer: false)
            } else {
                becomeLeader()
            }
            return true
        case .lost:
            becomeFollower(term: term, leader: 0)
            return true
        case .pending:
            return false
        }
    }

    // MARK: - Messages

    /// Handles a message from a peer. A message no honest member would send is refused before
    /// it reaches the protocol (see `refusal(of:)`): nothing changes, and the outcome says why.
    @discardableResult
    public func step(_ message: Message) -> StepOutcome {
        precondition(message.to == id, "message for \(message.to) delivered to \(id)")
        guard message.from != id, message.from != 0 else {
            return .refused("a message from member \(message.from) to \(id)")
        }
        if let reason = refusal(of: message) { return .refused(reason) }
        guard admitTerm(of: message) else { return .handled }
        // A message of a higher term may have just made its sender our leader (or cleared it).
        if message.term == term, leader != 0, message.from != leader, Self.onlyFromLeader(message.kind) {
            return .refused(
                "\(message.kind.rawValue) from member \(message.from), but member \(leader) leads term \(term)")
        }
        dispatch(message)
        return .handled
    }

    private func dispatch(_ message: Message) {
        switch message.kind {
        case .preVote, .vote:
            handleVoteRequest(message)
        default:
            switch role {
            case .leader: stepLeader(message)
            case .candidate, .preCandidate: stepCandidate(message)
            case .follower: stepFollower(message)
            }
        }
    }

    /// Term rules common to every role; false if the message is to be dropped here.
    private func admitTerm(of message: Message) -> Bool {
        if message.term > term {
            if message.kind == .preVote || message.kind == .vote {
                let forced = message.context == Self.transferContext
                // Check-quorum: a member that recently heard from a live leader ignores
                // candidates, so a partitioned node coming back cannot depose it.
                if config.checkQuorum && (leader != 0 || ignoresCampaignsAfterStart)
                    && electionElapsed < config.electionTicks && !forced
                {
                    return false
                }
            }
            switch message.kind {
            case .preVote:
                return true // a pre-vote never changes our term
            case .preVoteResponse where !message.reject:
                return true // granted pre-votes carry the future term
            case .append, .heartbeat, .snapshot:
                becomeFollower(term: message.term, leader: message.from)
            default:
                becomeFollower(term: message.term, leader: 0)
            }
            return true
        }
        if message.term < term {
            if message.kind == .append || message.kind == .heartbeat {
                // A deposed leader (or one cut off): tell it the current term so it steps down.
                outbox.append(Message(kind: .appendResponse, from: id, to: message.from, term: term))
            } else if message.kind == .preVote {
                var response = Message(kind: .preVoteResponse, from: id, to: message.from, term: term)
                response.reject = true
                outbox.append(response)
            }
            return false
        }
        return true
    }

    private func handleVoteRequest(_ message: Message) {
        let isPreVote = message.kind == .preVote
        let canVote =
            vote == message.from
            || (vote == 0 && leader == 0)
            || (isPreVote && message.term > term)
        let grant = canVote && log.isUpToDate(lastIndex: message.index, lastTerm: message.logTerm)
        var response = Message(
            kind: isPreVote ? .preVoteResponse : .voteResponse, from: id, to: message.from,
            term: grant ? message.term : term)
        response.reject = !grant
        if grant && !isPreVote {
            electionElapsed = 0
            vote = message.from
        }
        outbox.append(response)
    }

    private func stepCandidate(_ message: Message) {
        switch message.kind {
        case .append, .heartbeat, .snapshot:
            // A leader of our term exists: follow it.
            becomeFollower(term: message.term, leader: message.from)
            stepFollower(message)
        case .preVoteResponse where role == .preCandidate, .voteResponse where role == .candidate:
            votes[message.from] = votes[message.from] ?? !message.reject
            _ = checkElection()
        default:
            break // a candidate knows no leader, so no transfer or read answer is for it
        }
    }

    private func stepFollower(_ message: Message) {
        switch message.kind {
        case .append:
            electionElapsed = 0
            leader = message.from
            handleAppend(message)
        case .heartbeat:
            electionElapsed = 0
            leader = message.from
            log.commit(to: min(message.commit, log.lastIndex))
            var response = Message(kind: .heartbeatResponse, from: id, to: message.from, term: term)
            response.context = message.context
            response.index = message.index // the leader's lease clock at sending
            outbox.append(response)
        case .snapshot:
            electionElapsed = 0
            leader = message.from
            handleSnapshot(message)
        case .timeoutNow where message.from == leader:
            campaign(transfer: true)
        case .readIndexResponse where message.from == leader:
            readStates.append(ReadState(index: message.index, context: message.context))
        case .propose:
            break // only leaders take forwarded proposals; the client retries elsewhere
        default:
            break
        }
    }

    private func handleAppend(_ message: Message) {
        var response = Message(kind: .appendResponse, from: id, to: message.from, term: term)
        if message.index < log.committed {
            response.index = log.committed
        } else if let lastNew = log.maybeAppend(
            index: message.index, term: message.logTerm,
            leaderCommit: message.commit, entries: message.entries)
        {
            response.index = lastNew
        } else {
            // Tell the leader where to look next: the last index at or below the rejected one
            // whose term is not above the leader's term there (skips a whole term at a time).
            response.reject = true
            response.index = message.index
            let hint = conflictHint(below: min(message.index, log.lastIndex), term: message.logTerm)
            response.rejectHint = hint
            response.logTerm = log.term(at: hint) ?? 0
        }
        outbox.append(response)
    }

    /// The largest index ≤ `index` whose term is ≤ `term` (or the first index available).
    private func conflictHint(below index: UInt64, term: UInt64) -> UInt64 {
        var candidate = index
        while candidate > 0, let found = log.term(at: candidate), found > term {
            candidate -= 1
        }
        return candidate
    }

    private func handleSnapshot(_ message: Message) {
        guard let snapshot = message.snapshot else { return }
        var response = Message(kind: .appendResponse, from: id, to: message.from, term: term)
        let metadata = snapshot.metadata
        if metadata.index <= log.committed {
            response.index = log.committed
        } else if log.matchTerm(metadata.index, metadata.term) {
            // We already have the entries it covers: just learn that they are committed.
            log.commit(to: metadata.index)
            response.index = log.committed
        } else {
            log.restore(snapshot)
            configuration = metadata.configuration
            response.index = metadata.index
        }
        outbox.append(response)
    }

    // MARK: - Leader

    private func stepLeader(_ message: Message) {
        switch message.kind {
        case .appendResponse:
            handleAppendResponse(message)
        case .heartbeatResponse:
            handleHeartbeatResponse(message)
        case .readIndex:
            handleReadIndex(from: message.from, context: message.context)
        case .propose:
            guard transferee == 0 else { return }
            _ = try? appendProposal(message.entries)
        default:
            break
        }
    }

    private func handleAppendResponse(_ message: Message) {
        guard progress[message.from] != nil else { return }
        progress[message.from]!.recentActive = true
        if message.reject {
            handleRejection(message)
        } else {
            handleAcknowledgement(message)
        }
    }

    private func handleRejection(_ message: Message) {
        var next = message.rejectHint
        if message.logTerm > 0 {
            // Skip back over our own entries of terms above the follower's term at `next`.
            next = conflictHint(below: message.rejectHint, term: message.logTerm)
        }
        var peer = progress[message.from]!
        guard peer.maybeDecrease(rejected: message.index, hint: next) else { return }
        if peer.state == .replicate { peer.becomeProbe() }
        progress[message.from] = peer
        sendAppend(to: message.from)
    }

    private func handleAcknowledgement(_ message: Message) {
        var peer = progress[message.from]!
        let wasPaused = peer.isPaused
        guard peer.maybeUpdate(message.index) else {
            progress[message.from] = peer
            return
        }
        switch peer.state {
        case .probe:
            peer.becomeReplicate()
        case .snapshot where peer.match >= peer.pendingSnapshot:
            peer.becomeProbe()
            peer.becomeReplicate()
        case .replicate:
            peer.inflights.freeTo(message.index)
        default:
            break
        }
        progress[message.from] = peer
        if maybeCommitAsLeader() {
            broadcastAppend()
        } else if wasPaused {
            sendAppend(to: message.from)
        }
        while progress[message.from]!.state == .replicate && sendAppend(to: message.from, evenIfEmpty: false) {}
        if message.from == transferee && progress[message.from]!.match == log.lastIndex {
            outbox.append(Message(kind: .timeoutNow, from: id, to: message.from, term: term))
        }
    }

    private func handleHeartbeatResponse(_ message: Message) {
        guard var peer = progress[message.from] else { return }
        peer.recentActive = true
        peer.probeSent = false
        peer.heartbeatAcknowledgedAt = max(peer.heartbeatAcknowledgedAt ?? 0, message.index)
        if peer.state == .replicate && peer.inflights.isFull { peer.inflights.freeFirst() }
        progress[message.from] = peer
        if peer.match < log.lastIndex { sendAppend(to: message.from) }
        guard !message.context.isEmpty else { return }
        for request in readRequests.acknowledge(
            context: message.context, from: message.from, configuration: configuration)
        {
            answer(request)
        }
    }

    /// Commits the highest index a quorum of voters has, if its entry is of this term.
    private func maybeCommitAsLeader() -> Bool {
        let candidate = configuration.committedIndex { progress[$0]?.match ?? 0 }
        if config.plantedBug == .oldTermCommit, candidate > log.committed, candidate <= log.lastIndex {
            log.commit(to: candidate)
            return true
        }
        return log.maybeCommit(candidate, term: term)
    }

    /// Sends the next append (or a snapshot) to `peer`, unless it is paused. Returns true if
    /// something was sent.
    @discardableResult
    private func sendAppend(to peerID: NodeID, evenIfEmpty: Bool = true) -> Bool {
        guard peerID != id, var peer = progress[peerID], !peer.isPaused else { return false }
        defer { progress[peerID] = peer }
        let previous = peer.next - 1
        guard peer.next >= log.firstIndex, let previousTerm = log.term(at: previous) else {
            return sendSnapshot(to: peerID, &peer)
        }
        let entries = log.entries(from: peer.next, maxBytes: config.maxMessageBytes)
        if entries.isEmpty && !evenIfEmpty { return false }
        var message = Message(kind: .append, from: id, to: peerID, term: term)
        message.index = previous
        message.logTerm = previousTerm
        message.entries = entries
        message.commit = log.committed
        peer.sentEntries(
            last: entries.last?.index ?? previous, count: entries.count, bytes: entries.reduce(0) { $0 + $1.sizeBytes })
        outbox.append(message)
        return true
    }

    private func makeProgress(next: UInt64, isLearner: Bool) -> Progress {
        Progress(
            next: next, maxInflight: config.maxInflightMessages, maxInflightBytes: config.maxInflightBytes,
            isLearner: isLearner)
    }

    private func sendSnapshot(to peerID: NodeID, _ peer: inout Progress) -> Bool {
        let snapshot = log.store.snapshot()
        var message = Message(kind: .snapshot, from: id, to: peerID, term: term)
        message.snapshot = snapshot
        peer.becomeSnapshot(snapshot.metadata.index)
        outbox.append(message)
        return true
    }

    private func broadcastAppend() {
        for member in progress.keys.sorted() where member != id { sendAppend(to: member) }
    }

    private func broadcastHeartbeat(context: [UInt8]) {
        for member in progress.keys.sorted() where member != id {
            var message = Message(kind: .heartbeat, from: id, to: member, term: term)
            // Never tell a follower a commit index beyond what it is known to have.
            message.commit = min(progress[member]!.match, log.committed)
            message.context = context
            message.index = leaseClock
            outbox.append(message)
        }
    }

    private func appendAsLeader(_ entries: [Entry]) {
        var numbered = entries
        for offset in numbered.indices {
            numbered[offset].term = term
            numbered[offset].index = log.lastIndex + 1 + UInt64(offset)
        }
        log.append(numbered)
        uncommittedBytes += numbered.reduce(0) { $0 + $1.sizeBytes }
        // Our own match advances when the caller reports these persisted (`advance`).
        if configuration.voters == [id] { _ = maybeCommitAsLeader() }
        broadcastAppend()
    }

    // MARK: - Proposals

    /// Where a proposal went.
    public enum ProposalOutcome: Equatable, Sendable {
        /// Appended to the leader's log at `index` in `term`; it is committed when a `Ready`
        /// hands it out for applying with that same term.
        case appended(index: UInt64, term: UInt64)
        /// Forwarded to the leader; the caller learns the outcome from the applied entries.
        case forwarded(to: NodeID)
    }

    /// Proposes `data` for the replicated log.
    public func propose(_ data: [UInt8]) throws(RaftError) -> ProposalOutcome {
        let entry = Entry(term: 0, index: 0, kind: .normal, data: data)
        if role != .leader {
            guard config.forwardProposals, leader != 0 else { throw .notLeader(leaderHint: leader) }
            var message = Message(kind: .propose, from: id, to: leader, term: term)
            message.entries = [entry]
            outbox.append(message)
            return .forwarded(to: leader)
        }
        let index = try appendProposal([entry])
        return .appended(index: index, term: term)
    }

    /// Appends entries proposed to this leader; returns the index of the last one.
    private func appendProposal(_ entries: [Entry]) throws(RaftError) -> UInt64 {
        guard transferee == 0 else { throw .transferInProgress }
        let bytes = entries.reduce(0) { $0 + $1.sizeBytes }
        if config.maxUncommittedBytes > 0 && uncommittedBytes > 0
            && uncommittedBytes + bytes > config.maxUncommittedBytes
        {
            throw .tooManyUncommittedBytes
        }
        for entry in entries where entry.kind == .configurationChange {
            guard pendingChangeIndex <= log.applied else { throw .configurationChangePending }
        }
        appendAsLeader(entries)
        if entries.contains(where: { $0.kind == .configurationChange }) { pendingChangeIndex = log.lastIndex }
        return log.lastIndex
    }

    /// Proposes one membership change (leader only). It takes effect when applied.
    public func proposeChange(_ change: ConfigurationChange) throws(RaftError) -> UInt64 {
        guard role == .leader else { throw .notLeader(leaderHint: leader) }
        if let problem = configuration.validate(change) { throw .invalidConfigurationChange(problem) }
        if case .promote(let node) = change, let peer = progress[node], peer.match < log.committed {
            throw .invalidConfigurationChange(
                "learner \(node) has not caught up (match \(peer.match), commit \(log.committed))")
        }
        return try appendProposal([Entry(term: 0, index: 0, kind: .configurationChange, data: change.encoded)])
    }

    // MARK: - Reads

    /// Asks for a linearizable read point; the answer arrives as a `ReadState` in a later
    /// `Ready` carrying the same `context`, once leadership has been confirmed by a quorum.
    public func requestRead(context: [UInt8]) throws(RaftError) {
        precondition(!context.isEmpty, "a read request needs a context to match its answer")
        if role == .leader {
            handleReadIndex(from: id, context: context)
            return
        }
        guard leader != 0 else { throw .notLeader(leaderHint: 0) }
        var message = Message(kind: .readIndex, from: id, to: leader, term: term)
        message.context = context
        outbox.append(message)
    }

    private func handleReadIndex(from requester: NodeID, context: [UInt8]) {
        if config.plantedBug == .staleRead {
            answer(ReadRequest(index: log.committed, context: context, requester: requester))
            return
        }
        // Until an entry of this term commits, the leader's commit index may lag behind what
        // earlier leaders committed: such reads are dropped and the client retries.
        guard log.term(at: log.committed) == term else { return }
        let request = ReadRequest(index: log.committed, context: context, requester: requester)
        if configuration.voters == [id] || holdsLease {
            answer(request)
            return
        }
        readRequests.add(request, leader: id)
        broadcastHeartbeat(context: context)
    }

    /// Whether a lease read may be answered now (see `RaftConfig.leaseClockDriftBoundTicks`):
    /// a quorum, counting this leader, acknowledged a heartbeat sent within the lease.
    public var holdsLease: Bool {
        guard let leaseTicks = config.leaseTicks, role == .leader, !leaseRevoked, transferee == 0 else { return false }
        var acknowledged = configuration.voters.compactMap {
            $0 == id ? leaseClock : progress[$0]?.heartbeatAcknowledgedAt
        }
        guard acknowledged.count >= configuration.quorum else { return false }
        acknowledged.sort(by: >)
        let oldest = acknowledged[configuration.quorum - 1]
        assert(oldest <= leaseClock, "a heartbeat acknowledged at \(oldest), after the lease clock \(leaseClock)")
        return oldest <= leaseClock && leaseClock - oldest < leaseTicks
    }

    private func answer(_ request: ReadRequest) {
        if request.requester == id {
            readStates.append(ReadState(index: request.index, context: request.context))
        } else {
            var message = Message(kind: .readIndexResponse, from: id, to: request.requester, term: term)
            message.index = request.index
            message.context = request.context
            outbox.append(message)
        }
    }

    // MARK: - Leadership transfer

    /// Hands leadership to `target` (leader only): proposals stop, the target is caught up and
    /// told to campaign at once. Abandoned if it has not happened within an election timeout.
    public func transferLeadership(to target: NodeID) throws(RaftError) {
        guard role == .leader else { throw .notLeader(leaderHint: leader) }
        guard target != id else { throw .invalidTransferTarget("node \(target) already leads") }
        guard configuration.isVoter(target) else { throw .invalidTransferTarget("node \(target) is not a voter") }
        transferee = target
        leaseRevoked = true
        electionElapsed = 0
        if progress[target]!.match == log.lastIndex {
            outbox.append(Message(kind: .timeoutNow, from: id, to: target, term: term))
        } else {
            sendAppend(to: target)
        }
    }

    // MARK: - Ready and advance

    /// Whether `ready()` would return anything.
    public var hasReady: Bool {
        softState != lastSoftState || hardState != persistedHardState || !log.unstableEntries.isEmpty
            || log.pendingSnapshot != nil || log.hasNextCommittedEntries || !outbox.isEmpty || !readStates.isEmpty
    }

    /// Collects the work to do; the caller must pass it to `advance` before the next `ready()`.
    public func ready() -> Ready {
        precondition(handedOut == nil, "ready() called again before advance()")
        var ready = Ready()
        if softState != lastSoftState { ready.softState = softState }
        if hardState != persistedHardState { ready.hardState = hardState }
        ready.entries = log.unstableEntries
        ready.snapshot = log.pendingSnapshot
        ready.committedEntries = log.nextCommittedEntries(maxBytes: config.maxApplyBytesPerReady)
        // Messages may go before the disk write only if they promise nothing unpersisted: a
        // leader's appends and heartbeats in a term and vote already on disk (the leader counts
        // its own entries only once persisted). Everything else waits for the sync.
        let termPersisted = term == persistedHardState.term && vote == persistedHardState.vote
        for message in outbox {
            if config.plantedBug == .noPersistBeforeSend
                || (termPersisted && role == .leader && Self.mayPrecedePersist(message.kind))
            {
                ready.messages.append(message)
            } else {
                ready.messagesAfterPersist.append(message)
            }
        }
        outbox = []
        ready.readStates = readStates
        readStates = []
        handedOut = ready
        return ready
    }

    private static func mayPrecedePersist(_ kind: Message.Kind) -> Bool {
        switch kind {
        case .append, .heartbeat, .snapshot, .timeoutNow, .readIndexResponse: return true
        default: return false
        }
    }

    /// Reports that everything in `ready` (the last value returned by `ready()`) was persisted,
    /// sent and applied.
    public func advance(_ ready: Ready) {
        precondition(handedOut != nil, "advance() without a ready()")
        handedOut = nil
        if let softState = ready.softState { lastSoftState = softState }
        if let hardState = ready.hardState { persistedHardState = hardState }
        if let snapshot = ready.snapshot {
            log.snapshotStable(index: snapshot.metadata.index)
            if progress[id] != nil { progress[id]!.match = max(progress[id]!.match, snapshot.metadata.index) }
        }
        if let last = ready.entries.last {
            log.stableTo(index: last.index, term: last.term)
            if role == .leader, var own = progress[id] {
                // Our own vote for these entries counts from now on.
                _ = own.maybeUpdate(min(persistedLastIndex, log.lastIndex))
                progress[id] = own
                if maybeCommitAsLeader() { broadcastAppend() }
            }
        }
        if let last = ready.committedEntries.last {
            // Committed entries leave the uncommitted budget as they are handed out, so the
            // bound needs no second read of the log. Entries of earlier leaders were never
            // counted, hence the floor at zero.
            if role == .leader {
                uncommittedBytes = max(0, uncommittedBytes - ready.committedEntries.reduce(0) { $0 + $1.sizeBytes })
            }
            // A snapshot received after this Ready was handed out already covers these entries
            // (its index exceeds every index committed before it): they and their membership
            // changes are superseded by the snapshot's state and configuration.
            if last.index > log.applied {
                for entry in ready.committedEntries where entry.kind == .configurationChange {
                    applyConfigurationChange(entry)
                }
                log.appliedTo(last.index)
            }
        }
    }

    private func applyConfigurationChange(_ entry: Entry) {
        // Only this core appends changes, encoded by `proposeChange`, so an undecodable one can
        // come only from an older or broken member. Every member skips it alike (the log is
        // the same everywhere), and the caller logs it; trapping would crash every member again
        // after each restart.
        guard let change = ConfigurationChange(encoded: entry.data) else {
            ignoredChanges.append(entry.index)
            return
        }
        // Validated when proposed, and changes are made one at a time, so it still applies.
        guard configuration.validate(change) == nil else { return }
        configuration.apply(change)
        guard role == .leader else { return }
        switch change {
        case .bootstrap:
            return
        case .addLearner(let node):
            progress[node] = makeProgress(next: log.lastIndex + 1, isLearner: true)
        case .promote(let node):
            let old = progress[node]
            var promoted = makeProgress(next: old?.next ?? log.lastIndex + 1, isLearner: false)
            promoted.match = old?.match ?? 0
            progress[node] = promoted
        case .remove(let node):
            progress[node] = nil
            if node == id {
                becomeFollower(term: term, leader: 0)
                return
            }
            if node == transferee { transferee = 0 }
        }
        // A smaller quorum may commit more now.
        if maybeCommitAsLeader() { broadcastAppend() }
    }

    /// The transport finished sending a snapshot to `peer` (`delivered`) or gave up. Either
    /// way the leader probes again once the next heartbeat answer arrives: from after the
    /// snapshot if it was delivered, from the follower's match index if not.
    public func reportSnapshot(peer: NodeID, delivered: Bool) {
        guard role == .leader, var state = progress[peer], state.state == .snapshot else { return }
        if !delivered { state.pendingSnapshot = 0 }
        state.becomeProbe()
        state.probeSent = true
        progress[peer] = state
    }

    /// The transport could not reach `peer`: stop pipelining to it until it answers again.
    public func reportUnreachable(peer: NodeID) {
        guard role == .leader, var state = progress[peer], state.state == .replicate else { return }
        state.becomeProbe()
        progress[peer] = state
    }
}
