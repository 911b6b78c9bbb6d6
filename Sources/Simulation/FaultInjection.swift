import Raft

/// The faults of a run: partitions of every shape, crashes that lose unsynced writes,
/// leadership transfers and membership changes, all drawn from the seed while faults are on.
extension Simulation {
    func injectFault() throws {
        let roll = random.next(below: 100)
        switch roll {
        case 0..<12: partitionInTwo()
        case 12..<20: cutOneWay()
        case 20..<30: isolateLeader()
        case 30..<36: bridge()
        case 36..<56:
            if !network.cut.isEmpty { log("fault: partitions heal") }
            network.cut = []
        case 56..<68: crash(liveNodes.isEmpty ? nil : liveNodes[Int(random.next(below: UInt64(liveNodes.count)))])
        case 68..<76: crash(currentLeader?.id)
        case 76..<86: try transferLeadership()
        default: try changeMembership()
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
        node.crash()
        log("fault: node \(id) crashes")
        queue.schedule(.restart(id), at: now + 20 + random.next(below: 600))
    }

    private func transferLeadership() throws {
        guard let leader = currentLeader, let raft = leader.raft else { return }
        let others = raft.configuration.voters.sorted().filter { $0 != leader.id }
        guard !others.isEmpty else { return }
        let target = others[Int(random.next(below: UInt64(others.count)))]
        do {
            try raft.transferLeadership(to: target)
            log("fault: leader \(leader.id) transfers leadership to \(target)")
        } catch {
            log("fault: transfer to \(target) refused: \(error)")
        }
        try drive(leader)
    }

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
        } else if let spare = spareNode() {
            change = .addLearner(spare.id)
            proposedLearners.insert(spare.id)
        } else {
            return
        }
        do {
            let index = try raft.proposeChange(change)
            log("fault: leader \(leader.id) proposes \(change) at \(index)")
        } catch {
            log("fault: \(change) refused: \(error)")
        }
        try drive(leader)
    }

    /// A node that has never been a member, started with no configuration (so it never
    /// campaigns) and waiting to be added; created on demand, a few per run at most.
    private func spareNode() -> SimulatedNode? {
        for id in nodes.keys.sorted() where !proposedLearners.contains(id) && !nodes[id]!.retired {
            return nodes[id]
        }
        guard nextNodeID <= NodeID(options.voters) + 6 else { return nil }
        let node = SimulatedNode(id: nextNodeID, configuration: Configuration(voters: []))
        nextNodeID += 1
        nodes[node.id] = node
        start(node)
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
    func healAll() {
        healed = true
        network.cut = []
        for id in nodes.keys.sorted() where !nodes[id]!.isUp && !nodes[id]!.retired {
            start(nodes[id]!)
        }
        log("heal: faults stop, every member is up")
    }
}
