import Engine
import Raft

/// The faults of a run: partitions of every shape, crashes that lose unsynced writes,
/// leadership transfers and membership changes, all drawn from the seed while faults are on.
extension Simulation {
    func injectFault() throws {
        switch profile.mix.draw(&random) {
        case .partitionInTwo: partitionInTwo()
        case .cutOneWay: cutOneWay()
        case .isolateLeader: isolateLeader()
        case .isolateNextLeader:
            isolateNextLeader = true
            log("fault: the next leader will be isolated as soon as it is elected")
        case .bridge: bridge()
        case .healPartitions:
            if !network.cut.isEmpty { log("fault: partitions heal") }
            network.cut = []
        case .crashAny: crash(liveNodes.isEmpty ? nil : liveNodes[Int(random.next(below: UInt64(liveNodes.count)))])
        case .crashLeader: crash(currentLeader?.id)
        case .pauseAny: pause(liveNodes.isEmpty ? nil : liveNodes[Int(random.next(below: UInt64(liveNodes.count)))])
        case .pauseLeader: pause(currentLeader?.id)
        case .crashDuringWrite: armCrash(.during)
        case .crashAfterWrite: armCrash(.after)
        case .transferLeadership: try transferLeadership()
        case .changeMembership: try changeMembership()
        }
    }

    /// Members that are up, in id order.
    var liveNodes: [NodeID] { nodes.keys.sorted().filter { nodes[$0]!.isUp } }

    private var reachableNodes: [NodeID] { nodes.keys.sorted().filter { !nodes[$0]!.retired } }

    private func shuffled(_ ids: [NodeID]) -> [NodeID] {
        var ids = ids
        for position in stride(from: ids.count - 1, to: 0, by: -1) {
            ids.swapAt(position, Int(random.next(below: UInt64(position + 1))))
        }
        return ids
    }

    private func partitionInTwo() {
        let ids = shuffled(reachableNodes)
        guard ids.count >= 2 else { return }
        let split = 1 + Int(random.next(below: UInt64(ids.count - 1)))
        network.cutBothWays(Array(ids[..<split]), Array(ids[split...]))
        log("fault: partition \(ids[..<split].sorted()) | \(ids[split...].sorted())")
    }

    private func cutOneWay() {
        let ids = shuffled(reachableNodes)
        guard ids.count >= 2 else { return }
        network.cut.insert(NetworkState.Link(from: ids[0], to: ids[1]))
        log("fault: one-way cut \(ids[0]) → \(ids[1])")
    }

    private func isolateLeader() {
        guard let leader = currentLeader?.id else { return }
        network.cutBothWays([leader], reachableNodes)
        log("fault: leader \(leader) isolated")
    }

    /// Two sides that reach each other only through one member in the middle.
    private func bridge() {
        let ids = shuffled(reachableNodes)
        guard ids.count >= 3 else { return }
        let rest = Array(ids.dropFirst())
        let split = 1 + Int(random.next(below: UInt64(rest.count - 1)))
        network.cutBothWays(Array(rest[..<split]), Array(rest[split...]))
        log("fault: bridge through \(ids[0]) between \(rest[..<split].sorted()) and \(rest[split...].sorted())")
    }

    /// Stops `id` at once, losing every write not yet synced; it restarts a little later.
    private func crash(_ id: NodeID?) {
        guard let id, let node = nodes[id], node.isUp else { return }
        log("fault: node \(id) crashes")
        crashNow(node)
    }

    func crashNow(_ node: SimulatedNode) {
        if let point = node.crashPoint { log("fault: node \(node.id) crashes \(point)") }
        node.crash()
        queue.schedule(.restart(node.id), at: now + profile.restartDelay(&random))
    }

    /// Stops `id`'s process for a while, as SIGSTOP would; it resumes where it was, unaware.
    private func pause(_ id: NodeID?) {
        guard let id, let node = nodes[id], node.isUp, node.pausedUntil.map({ $0 <= now }) ?? true else { return }
        let until = now + profile.restartDelay(&random) + 100
        node.pausedUntil = until
        node.pausedAt = now
        log("fault: node \(id) is paused until \(until)")
    }

    /// Sets a random live member (the leader half the time) to crash at one edge of its next
    /// write of a random kind.
    private func armCrash(_ moment: CrashPoint.Moment) {
        let live = liveNodes
        guard !live.isEmpty else { return }
        let id =
            random.next(below: 2) == 0
            ? currentLeader?.id ?? live[0] : live[Int(random.next(below: UInt64(live.count)))]
        let triggers = CrashPoint.Trigger.allCases
        let point = CrashPoint(moment: moment, trigger: triggers[Int(random.next(below: UInt64(triggers.count)))])
        nodes[id]!.crashPoint = point
        log("fault: node \(id) will crash \(point)")
    }

    private func transferLeadership() throws {
        guard let leader = currentLeader, let loop = leader.loop else { return }
        let others = loop.raft.configuration.voters.sorted().filter { $0 != leader.id }
        guard !others.isEmpty else { return }
        let target = others[Int(random.next(below: UInt64(others.count)))]
        log("fault: leader \(leader.id) is asked to transfer leadership to \(target)")
        loop.transferLeadership(
            to: target,
            TransferWaiter(startedAt: clock.nanoseconds, deadline: operatorDeadline) { [unowned self] result in
                if case .failure(let error) = result { log("fault: transfer to \(target) did not happen: \(error)") }
            })
        try drive(leader)
    }

    /// Operators' requests (transfers, membership changes) wait this long on the loop.
    private var operatorDeadline: UInt64 { clock.nanoseconds + 2_000_000_000 }

    /// One step of a membership cycle: add a fresh learner, promote it once caught up, then
    /// remove a voter (possibly the leader), so the cluster returns to its size with one
    /// member replaced.
    private func changeMembership() throws {
        guard let leader = currentLeader, let raft = leader.raft else { return }
        let configuration = raft.configuration
        let change: ConfigurationChange
        if let learner = configuration.learners.sorted().first {
            change = .promote(learner)
        } else if configuration.voters.count > options.voters {
            let voters = configuration.voters.sorted()
            change = .remove(voters[Int(random.next(below: UInt64(voters.count)))])
        } else if let spare = try spareNode() {
            change = .addLearner(spare.id)
            proposedLearners.insert(spare.id)
        } else {
            return
        }
        log("fault: leader \(leader.id) is asked to make \(change)")
        leader.loop!.changeMembership(
            change,
            ProposalWaiter(startedAt: clock.nanoseconds, deadline: operatorDeadline) { [unowned self] result in
                switch result {
                case .success(let applied): log("\(change) applied at \(applied.index)")
                case .failure(let error): log("\(change) did not happen: \(error)")
                }
            })
        try drive(leader)
    }

    /// A node that has never been a member, started with no configuration (so it never
    /// campaigns) and waiting to be added; created on demand, a few per run at most.
    private func spareNode() throws -> SimulatedNode? {
        for id in nodes.keys.sorted() where !proposedLearners.contains(id) && !nodes[id]!.retired {
            return nodes[id]
        }
        guard nextNodeID <= NodeID(options.voters) + 6 else { return nil }
        let node = SimulatedNode(id: nextNodeID, configuration: Configuration(voters: []))
        nextNodeID += 1
        nodes[node.id] = node
        try start(node)
        log("node \(node.id) starts as a spare")
        return node
    }

    /// Stops, for good, every member whose removal has been committed (as an operator
    /// would shut down a removed member).
    func retireRemovedMembers() {
        guard !removedMembers.isEmpty else { return }
        for id in removedMembers.sorted() {
            guard let node = nodes[id], !node.retired else { continue }
            node.crash()
            node.retired = true
            log("node \(id) retires (its removal is committed)")
        }
        removedMembers = []
    }

    /// Faults stop: links heal, message loss stops, crashed members restart.
    func healAll() throws {
        healed = true
        network.cut = []
        isolateNextLeader = false
        // Armed crashes are disarmed; paused members resume when their pause ends.
        for id in nodes.keys.sorted() { nodes[id]!.crashPoint = nil }
        for id in nodes.keys.sorted() where !nodes[id]!.isUp && !nodes[id]!.retired {
            try start(nodes[id]!)
        }
        log("heal: faults stop, every member is up")
    }
}

/// One kind of fault.
enum FaultKind: CaseIterable {
    case partitionInTwo, cutOneWay, isolateLeader, isolateNextLeader, bridge, healPartitions
    case pauseAny, pauseLeader, crashAny, crashLeader, crashDuringWrite, crashAfterWrite, transferLeadership,
        changeMembership
}

/// The weights with which a seed draws its faults: every kind stays possible in every mix, and
/// each mix leans on one family so that, across seeds, each family is stressed hard.
enum FaultMix: String, CaseIterable {
    case balanced
    /// Crashes and restarts, the leader's most of all: lost unsynced writes, leader churn.
    case crashes
    /// Partitions of every shape, with few crashes.
    case partitions
    /// Leadership transfers and membership changes.
    case reconfiguration

    private var weights: [(FaultKind, UInt64)] {
        switch self {
        case .balanced:
            return [
                (.partitionInTwo, 12), (.cutOneWay, 8), (.isolateLeader, 8), (.isolateNextLeader, 4), (.bridge, 6),
                (.healPartitions, 20),
                (.pauseAny, 3), (.pauseLeader, 4), (.crashAny, 6), (.crashLeader, 5), (.crashDuringWrite, 4),
                (.crashAfterWrite, 4), (.transferLeadership, 8), (.changeMembership, 14),
            ]
        case .crashes:
            return [
                (.partitionInTwo, 4), (.cutOneWay, 2), (.isolateLeader, 4), (.isolateNextLeader, 8), (.bridge, 2),
                (.healPartitions, 10),
                (.pauseAny, 4), (.pauseLeader, 8), (.crashAny, 14), (.crashLeader, 16), (.crashDuringWrite, 16),
                (.crashAfterWrite, 16), (.transferLeadership, 5), (.changeMembership, 5),
            ]
        case .partitions:
            return [
                (.partitionInTwo, 20), (.cutOneWay, 12), (.isolateLeader, 14), (.isolateNextLeader, 10), (.bridge, 10),
                (.healPartitions, 24),
                (.pauseAny, 6), (.pauseLeader, 10), (.crashAny, 3), (.crashLeader, 3), (.crashDuringWrite, 1),
                (.crashAfterWrite, 1), (.transferLeadership, 3), (.changeMembership, 3),
            ]
        case .reconfiguration:
            return [
                (.partitionInTwo, 6), (.cutOneWay, 4), (.isolateLeader, 6), (.isolateNextLeader, 2), (.bridge, 4),
                (.healPartitions, 14),
                (.pauseAny, 2), (.pauseLeader, 2), (.crashAny, 6), (.crashLeader, 4), (.crashDuringWrite, 2),
                (.crashAfterWrite, 2), (.transferLeadership, 24), (.changeMembership, 28),
            ]
        }
    }

    func draw(_ random: inout SeededRandom) -> FaultKind {
        let weights = self.weights
        var roll = random.next(below: weights.reduce(0) { $0 + $1.1 })
        for (kind, weight) in weights {
            if roll < weight { return kind }
            roll -= weight
        }
        preconditionFailure("weights exhausted")
    }
}
