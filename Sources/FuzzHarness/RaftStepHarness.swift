import Raft
import Wire

/// Three Raft members in memory, driven to a role, then member 1 gets the fuzzed messages as if
/// from members 2 and 3. Properties: nothing traps; commit ≤ last index; applied ≤ commit; the
/// term stays within the bounds the core enforces on peers.
enum RaftStepHarness {
    static func run(_ input: [UInt8]) {
        guard let role = input.first else { return }
        guard let decoded = try? RaftMessageCoding.decode(Array(input.dropFirst())) else { return }
        let cluster = MemoryCluster()
        switch role % 3 {
        case 0: cluster.elect(2)
        case 1: cluster.elect(1)
        default: cluster.campaign(1)
        }
        let node = cluster.nodes[1]!
        for decodedMessage in decoded.prefix(64) {
            var message = decodedMessage
            message.to = 1
            message.from = 2 + message.from % 2
            node.step(message)
            cluster.persist(1)
            check(node)
        }
        for _ in 0..<(3 * node.config.electionTicks) {
            node.tick()
            cluster.persist(1)
            check(node)
        }
    }

    static func check(_ node: RaftNode) {
        precondition(
            node.commitIndex <= node.lastIndex, "commit \(node.commitIndex) beyond the last index \(node.lastIndex)")
        precondition(
            node.appliedIndex <= node.commitIndex, "applied \(node.appliedIndex) beyond commit \(node.commitIndex)")
        precondition(node.term <= MessageLimits.maxWireValue + 1_000, "term \(node.term) beyond every bound")
    }
}

/// A few members wired in memory: every Ready persisted to the member's store, messages
/// delivered in order (or dropped), committed entries counted.
final class MemoryCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var stores: [NodeID: MemoryLogStore] = [:]
    var queue: [Message] = []
    /// Every message delivered (for seed corpora).
    var delivered: [Message] = []

    init(voters: [NodeID] = [1, 2, 3]) {
        let configuration = Configuration(voters: Set(voters))
        for id in voters {
            let store = MemoryLogStore(configuration: configuration)
            stores[id] = store
            nodes[id] = RaftNode(
                config: RaftConfig(id: id), store: store, hardState: store.hardState, random: SeededRandom(seed: id))
        }
    }

    /// Processes member `id`'s Readies; its messages are queued (or dropped when `keep` is false).
    func persist(_ id: NodeID, keep: Bool = false) {
        let node = nodes[id]!, store = stores[id]!
        var rounds = 0
        while node.hasReady && rounds < 100 {
            rounds += 1
            let ready = node.ready()
            if let snapshot = ready.snapshot { store.applySnapshot(snapshot) }
            store.append(ready.entries)
            if let hardState = ready.hardState { store.setHardState(hardState) }
            if keep { queue += ready.messages + ready.messagesAfterPersist }
            node.advance(ready)
        }
    }

    func settle(limit: Int = 10_000) {
        var steps = 0
        for id in nodes.keys.sorted() { persist(id, keep: true) }
        while !queue.isEmpty && steps < limit {
            steps += 1
            let message = queue.removeFirst()
            guard let target = nodes[message.to] else { continue }
            delivered.append(message)
            target.step(message)
            persist(message.to, keep: true)
        }
    }

    /// Ticks `id` until it leads (or 200 ticks), delivering everything.
    func elect(_ id: NodeID) {
        let node = nodes[id]!
        var ticks = 0
        while node.role != .leader && ticks < 200 {
            ticks += 1
            node.tick()
            settle()
        }
        if node.role == .leader {
            _ = try? node.propose([1, 2, 3])
            settle()
        }
    }

    /// Ticks `id` until it campaigns, delivering nothing.
    func campaign(_ id: NodeID) {
        let node = nodes[id]!
        var ticks = 0
        while node.role == .follower && ticks < 200 {
            ticks += 1
            node.tick()
        }
        persist(id)
    }
}
