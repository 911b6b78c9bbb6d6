import Engine
import KVStore
@_spi(Simulation) import Raft

/// How one simulated run is set up. Times are simulated milliseconds.
public struct SimulationOptions: Sendable {
    /// Voting members at the start (3 or 5 in the standard schedules).
    public var voters: Int
    public var seed: UInt64
    /// A bug to switch on in every member's core (see `PlantedBug`).
    @_spi(Simulation) public var plantedBug: PlantedBug?
    /// Concurrent clients and the keys they share; nil: drawn from the seed.
    public var clients: Int?
    public var keys: Int?
    /// Faults are injected from the start until this time; then everything heals.
    public var faultMilliseconds: UInt64 = 3000
    /// After healing, a leader must be elected, every pending client request must complete and
    /// all members must hold the same state within this time.
    public var livenessBoundMilliseconds: UInt64 = 5000
    /// Nominal tick interval; each member's clock runs up to 10% fast or slow (drawn per
    /// member), so its ticks come every 9 to 11 ms.
    public var tickMilliseconds: UInt64 = 10
    /// A client gives up waiting for one attempt and retries elsewhere after this long.
    public var requestTimeoutMilliseconds: UInt64 = 300
    /// Stops a run that has gone on for this many steps (it is reported as a failure).
    public var stepLimit = 3_000_000

    public init(voters: Int, seed: UInt64) {
        self.voters = voters
        self.seed = seed
    }
}

/// What a run did and found.
public struct SimulationResult: Sendable {
    public var seed: UInt64
    public var steps = 0
    public var simulatedMilliseconds: UInt64 = 0
    /// Client operations that completed (and were checked for linearizability).
    public var operations = 0
    /// The fault profile this seed drew, in words.
    public var profile = ""
    /// Simulated time from the end of the faults until a leader served, every client request
    /// had completed and every member held the same state (nil if it never settled).
    public var settleMillisecondsAfterHealing: UInt64?
    /// Nil when every check passed.
    public var failure: String?
}

/// A whole cluster on a seeded scheduler: simulated network, disks, clients and faults. The
/// same options always give the same run, step for step.
public final class Simulation {
    let options: SimulationOptions
    var random: SeededRandom
    let profile: FaultProfile
    var queue = EventQueue<Event>()
    var now: UInt64 = 0
    var nodes: [NodeID: SimulatedNode] = [:]
    var nextNodeID: NodeID
    /// Nodes proposed as learners (a spare is used once).
    var proposedLearners: Set<NodeID> = []
    /// Nodes whose removal some member has applied (committed): they are stopped for good.
    var removedMembers: Set<NodeID> = []
    var clients: [SimulatedClient] = []
    var history: [HistoryOperation] = []
    var invariants = Invariants()
    var network = NetworkState()
    var healed = false
    /// Cut off the next member to become leader before its first messages leave.
    var isolateNextLeader = false
    /// Simulated time as the members' loops read it.
    let clock = SimulatedClock()
    /// A violation found where it could not be thrown (inside a waiter's answer): reported
    /// after the step.
    var deferred: (any Error)?
    private let trace: ((String) -> Void)?
    let messageTap: ((Message) -> Void)?
    private var result: SimulationResult

    enum Event {
        case tick(NodeID, incarnation: Int)
        case deliver(Message)
        case synced(NodeID, incarnation: Int)
        case request(NodeID, ClientRequest)
        case reply(client: Int, attempt: Int, ClientReply)
        case clientRetry(client: Int, sequence: UInt64, attempt: Int, elsewhere: Bool)
        case clientStart(client: Int)
        case restart(NodeID)
        case fault
        case heal

        /// The node whose process handles this event (and so waits while it is paused).
        var pausableTarget: NodeID? {
            switch self {
            case .tick(let id, _), .synced(let id, _), .request(let id, _): return id
            case .deliver(let message): return message.to
            default: return nil
            }
        }
    }

    /// `messageTap` sees every message delivered to a member (the fuzzers' seed corpus is made
    /// from this traffic).
    public init(options: SimulationOptions, trace: ((String) -> Void)? = nil, messageTap: ((Message) -> Void)? = nil) {
        precondition(options.voters >= 1 && (options.clients ?? 1) >= 1 && (options.keys ?? 1) >= 1)
        self.options = options
        self.trace = trace
        self.messageTap = messageTap
        random = SeededRandom(seed: options.seed)
        profile = FaultProfile(drawingFrom: &random)
        nextNodeID = NodeID(options.voters) + 1
        result = SimulationResult(seed: options.seed, profile: profile.description)
    }

    var tracing: Bool { trace != nil }
    var clientCount: Int { options.clients ?? profile.clients }
    var keyCount: Int { options.keys ?? profile.keys }

    func log(_ line: @autoclosure () -> String) {
        guard let trace else { return }
        trace("t=\(now) \(line())")
    }

    // MARK: - Running

    /// Runs the seed to the end and checks everything.
    public func run() -> SimulationResult {
        log("profile: \(profile.description)")
        do {
            try setUp()
            try runUntilSettled()
            try checkHistory()
        } catch let violation as InvariantViolation {
            result.failure = violation.description
        } catch {
            result.failure = "\(error)"
        }
        result.simulatedMilliseconds = now
        result.operations = history.filter { $0.completed != nil }.count
        if let failure = result.failure { log("FAILED: \(failure)") }
        return result
    }

    private func setUp() throws {
        let voters = Array(1...NodeID(options.voters))
        for id in voters {
            let node = SimulatedNode(id: id, configuration: Configuration(voters: []))
            node.store.append([Bootstrap.firstEntry(founders: voters)])
            node.store.setHardState(Bootstrap.hardState)
            nodes[id] = node
            try start(node)
        }
        for index in 0..<clientCount {
            clients.append(SimulatedClient(id: UInt64(index + 1), target: NodeID(index % options.voters + 1)))
            queue.schedule(.clientStart(client: index), at: random.next(below: 20))
        }
        queue.schedule(.fault, at: profile.nextFaultDelay(&random))
        queue.schedule(.heal, at: options.faultMilliseconds)
    }

    private func runUntilSettled() throws {
        let deadline = options.faultMilliseconds + options.livenessBoundMilliseconds
        while let (time, event) = queue.next() {
            now = time
            result.steps += 1
            if now > deadline {
                throw InvariantViolation(property: "liveness", detail: livenessReport())
            }
            guard result.steps <= options.stepLimit else {
                throw InvariantViolation(
                    property: "step limit", detail: "still running after \(options.stepLimit) steps")
            }
            clock.milliseconds = now
            try handle(event)
            if let deferred { throw deferred }
            retireRemovedMembers()
            try checkNodes()
            try checkRecords()
            if healed && clients.allSatisfy({ $0.operation == nil }) && isConverged() {
                log("settled: clients done, members converged")
                result.settleMillisecondsAfterHealing = now - options.faultMilliseconds
                return
            }
        }
        throw InvariantViolation(property: "liveness", detail: "no events left: " + livenessReport())
    }

    private func handle(_ event: Event) throws {
        if let id = event.pausableTarget, let node = nodes[id], let until = node.pausedUntil, until <= now {
            try resume(node)
        }
        if let id = event.pausableTarget, let node = nodes[id], let until = node.pausedUntil, until > now {
            // A paused process does nothing until it resumes. Its clients' requests and its own
            // disk write wait; peer messages are lost (the sender's transport gives up on them).
            if case .deliver(let message) = event {
                log("lost (node \(id) is paused) \(describe(message))")
                if message.kind == .snapshot { nodes[message.from]?.loop?.snapshotReport(peer: id, delivered: false) }
            } else {
                queue.schedule(event, at: until)
            }
            return
        }
        switch event {
        case .tick(let id, let incarnation):
            guard let node = nodes[id], node.incarnation == incarnation, let loop = node.loop else { return }
            loop.tick()
            loop.expireWaiters()
            queue.schedule(.tick(id, incarnation: incarnation), at: now + node.tickMilliseconds)
            try drive(node)
        case .deliver(let message):
            try deliver(message)
        case .synced(let id, let incarnation):
            guard let node = nodes[id], node.incarnation == incarnation, let loop = node.loop,
                let ready = node.disk.pending
            else { return }
            try node.disk.sync()
            try loop.writeCompleted()
            if let point = node.crashPoint, point.moment == .after, point.fires(on: ready) {
                crashNow(node)
                return
            }
            try drive(node)
        case .request(let id, let request):
            try receive(request, at: id)
        case .reply(let client, let attempt, let reply):
            receive(reply, client: client, attempt: attempt)
        case .clientRetry(let client, let sequence, let attempt, let elsewhere):
            retry(client: client, sequence: sequence, attempt: attempt, elsewhere: elsewhere)
        case .clientStart(let client):
            startOperation(client: client)
        case .restart(let id):
            guard let node = nodes[id], !node.isUp, !node.retired else { return }
            log("restart node \(id)")
            try start(node)
        case .fault:
            guard !healed else { return }
            try injectFault()
            queue.schedule(.fault, at: now + profile.nextFaultDelay(&random))
        case .heal:
            try healAll()
        }
    }

    /// A paused member runs again. Its clock is monotonic, so the ticks it missed are delivered
    /// at once (a leader then sees that it has not heard from a quorum for a long time).
    private func resume(_ node: SimulatedNode) throws {
        guard let loop = node.loop, let pausedAt = node.pausedAt else { return }
        let missed = min((now - pausedAt) / node.tickMilliseconds, 10_000)
        node.pausedUntil = nil
        node.pausedAt = nil
        log("node \(node.id) resumes after \(now - pausedAt) ms: \(missed) missed ticks")
        for _ in 0..<missed { loop.tick() }
        loop.expireWaiters()
        try drive(node)
    }

    /// Checks every member's role and newly committed entries against the invariants.
    private func checkNodes() throws {
        for id in nodes.keys.sorted() {
            guard let raft = nodes[id]!.raft else { continue }
            if raft.role == .leader { try invariants.observeLeader(id, term: raft.term) }
            let node = nodes[id]!
            guard raft.commitIndex > node.checkedCommit else { continue }
            for index in (node.checkedCommit + 1)...raft.commitIndex {
                if let term = raft.term(at: index) {
                    try invariants.observeCommitted(index: index, term: term, node: id)
                }
            }
            if raft.role == .leader, let term = raft.term(at: raft.commitIndex) {
                try checkCommitSafety(leader: id, index: raft.commitIndex, term: term)
            }
            node.checkedCommit = raft.commitIndex
        }
    }

    /// The records' invariants on every member whose state changed since it was last checked.
    private func checkRecords() throws {
        for id in nodes.keys.sorted() {
            guard let node = nodes[id], let kv = node.kv, node.recordsCheckedAt != kv.appliedIndex else { continue }
            try RecordInvariants.check(kv, node: id)
            node.recordsCheckedAt = kv.appliedIndex
        }
    }

    // MARK: - Nodes

    func raftConfig(for id: NodeID) -> RaftConfig {
        var config = RaftConfig(id: id)
        config.electionTicks = 10
        config.heartbeatTicks = 2
        config.maxMessageBytes = profile.maxMessageBytes
        config.maxInflightMessages = profile.maxInflightMessages
        config.maxInflightBytes = profile.maxInflightBytes
        config.maxUncommittedBytes = 64 << 10
        config.plantedBug = options.plantedBug
        // As on a member: a follower forwards session writes to the leader in proposal messages.
        config.forwardProposals = true
        // Clocks drift by up to 10%: over an election timeout (10 ticks) two members' tick
        // counts differ by at most 2, so a bound of 3 is safe.
        if profile.leaseReads { config.leaseClockDriftBoundTicks = 3 }
        return config
    }

    func start(_ node: SimulatedNode) throws {
        let seed = options.seed &* 0x9E37_79B9_7F4A_7C15 ^ node.id << 32 ^ UInt64(node.incarnation + 1)
        var loopOptions = MemberLoop.Options()
        loopOptions.snapshotEveryEntries = profile.compactEvery
        node.disk.checkPersisted = { [unowned self, id = node.id] entries, previousTerm in
            try invariants.observePersisted(entries, previousTerm: previousTerm, node: id)
        }
        try node.start(
            config: raftConfig(for: node.id), options: loopOptions, randomSeed: seed, clock: clock,
            outbox: SimulatedOutbox(self), observer: LoopChecks(self, node: node.id))
        if node.tickMilliseconds == 0 { node.tickMilliseconds = options.tickMilliseconds - 1 + random.next(below: 3) }
        queue.schedule(
            .tick(node.id, incarnation: node.incarnation), at: now + 1 + random.next(below: node.tickMilliseconds))
    }

    /// Lets `node`'s loop work through its Readies; a disk write it starts completes after a
    /// drawn sync latency (or is lost, if the node is set to crash during it).
    func drive(_ node: SimulatedNode) throws {
        guard let loop = node.loop, !loop.isWriting else { return }
        try loop.drive()
        guard let ready = node.disk.pending else { return }
        if let point = node.crashPoint, point.moment == .during, point.fires(on: ready) {
            crashNow(node)
            return
        }
        queue.schedule(.synced(node.id, incarnation: node.incarnation), at: now + profile.syncDelay(&random))
    }

    /// Cuts off a member the moment it becomes leader, before its first messages leave.
    func isolateIfNextLeader(_ ready: Ready, node id: NodeID) {
        guard isolateNextLeader && !healed && ready.softState?.role == .leader else { return }
        isolateNextLeader = false
        network.cutBothWays([id], nodes.keys.sorted())
        log("fault: node \(id) is isolated the moment it becomes leader")
    }

    /// The member that leads in the highest term, if any.
    var currentLeader: SimulatedNode? {
        var best: SimulatedNode?
        for id in nodes.keys.sorted() {
            guard let raft = nodes[id]!.raft, raft.role == .leader else { continue }
            if best == nil || raft.term > best!.raft!.term { best = nodes[id] }
        }
        return best
    }

    /// True when a leader exists and every member of its configuration is up, has applied
    /// everything the leader committed, and holds the same state.
    private func isConverged() -> Bool {
        guard let leader = currentLeader, let leaderRaft = leader.raft else { return false }
        let members = leaderRaft.configuration.members.sorted()
        for id in members {
            guard let loop = nodes[id]?.loop, loop.kv.appliedIndex == leaderRaft.commitIndex, !loop.isWriting else {
                return false
            }
        }
        let states = members.map { try? nodes[$0]!.kv!.stateHash().hash }
        return states.allSatisfy { $0 != nil && $0 == states.first! }
    }

    private func livenessReport() -> String {
        var parts: [String] = []
        if let leader = currentLeader {
            parts.append("leader \(leader.id) in term \(leader.raft!.term), commit \(leader.raft!.commitIndex)")
        } else {
            parts.append("no leader")
        }
        let pending = clients.filter { $0.operation != nil }.map { "client \($0.id): \($0.operation!)" }
        if !pending.isEmpty { parts.append("pending: " + pending.joined(separator: ", ")) }
        for id in nodes.keys.sorted() where !nodes[id]!.retired {
            let node = nodes[id]!
            if let raft = node.raft {
                parts.append(
                    "node \(id) \(raft.role.rawValue) term \(raft.term) applied \(raft.appliedIndex) last \(raft.lastIndex)"
                )
            } else {
                parts.append("node \(id) down")
            }
        }
        return "not settled \(options.livenessBoundMilliseconds) ms after healing at \(options.faultMilliseconds) ms ("
            + parts.joined(separator: "; ") + ")"
    }

    private func checkHistory() throws {
        switch LinearizabilityChecker().check(history) {
        case .linearizable:
            log("history of \(history.count) operations is linearizable")
        case .violation(let key, let operations):
            throw InvariantViolation(
                property: "linearizability",
                detail: "no valid order for key \(key):\n    " + operations.joined(separator: "\n    "))
        case .undecided(let key, let steps):
            throw InvariantViolation(
                property: "linearizability", detail: "checker gave up on key \(key) after \(steps) steps")
        }
    }
}

/// A member's messages, onto the simulated network.
final class SimulatedOutbox: Outbox {
    unowned let simulation: Simulation

    init(_ simulation: Simulation) { self.simulation = simulation }

    func send(_ messages: [Message]) throws -> [NodeID] {
        for message in messages { try simulation.transmit(message) }
        return []
    }
}

/// What the simulator checks as a member's loop works: entries applied and snapshots held agree
/// with every other member's, removals are noted, the next leader may be cut off.
final class LoopChecks: MemberLoopObserver {
    unowned let simulation: Simulation
    let id: NodeID

    init(_ simulation: Simulation, node id: NodeID) {
        self.simulation = simulation
        self.id = id
    }

    func loopTook(_ ready: Ready) throws { simulation.isolateIfNextLeader(ready, node: id) }

    func loopWillApply(_ entries: [Entry]) throws {
        for entry in entries {
            try simulation.invariants.observeApplied(entry, node: id)
            if entry.kind == .configurationChange, case .remove(let removed)? = ConfigurationChange(encoded: entry.data)
            {
                simulation.removedMembers.insert(removed)
            }
        }
    }

    func loopHolds(_ metadata: SnapshotMetadata, state: PinnedState) throws {
        try simulation.invariants.observeSnapshot(index: metadata.index, data: try state.snapshotData(), node: id)
        simulation.log("node \(id) holds a snapshot at \(metadata.index)")
    }
}
