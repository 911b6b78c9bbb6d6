@testable import Raft

/// A few `RaftNode`s wired together in memory, driven step by step by a test: every `Ready` is
/// persisted to the node's `MemoryLogStore` before its after-persist messages are queued, and
/// applied entries are recorded. Messages wait in a queue until `deliver` hands them over, so a
/// test can drop, hold or hand-craft any of them.
final class TestCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var stores: [NodeID: MemoryLogStore] = [:]
    var applied: [NodeID: [Entry]] = [:]
    var readStates: [NodeID: [ReadState]] = [:]
    var queue: [Message] = []
    /// Links that drop messages: (from, to).
    var cut: Set<[NodeID]> = []

    init(
        voters: [NodeID], learners: [NodeID] = [], logs: [NodeID: [Entry]] = [:], term: UInt64 = 0,
        configure: (inout RaftConfig) -> Void = { _ in }
    ) {
        let configuration = Configuration(voters: Set(voters), learners: Set(learners))
        for id in voters + learners {
            let store = MemoryLogStore(configuration: configuration)
            store.append(logs[id] ?? [])
            store.setHardState(HardState(term: term))
            var config = RaftConfig(id: id)
            configure(&config)
            stores[id] = store
            nodes[id] = RaftNode(
                config: config, store: store, hardState: store.hardState,
                random: SeededRandom(seed: id))
            applied[id] = []
        }
    }

    subscript(id: NodeID) -> RaftNode { nodes[id]! }

    /// Processes every node's Ready (persist, queue messages, apply) until none has any.
    func settleReadies() {
        var progressed = true
        var rounds = 0
        while progressed {
            rounds += 1
            precondition(rounds < 1000, "readies did not settle")
            progressed = false
            for id in nodes.keys.sorted() where nodes[id]!.hasReady {
                process(id)
                progressed = true
            }
        }
    }

    func process(_ id: NodeID) {
        let node = nodes[id]!
        let store = stores[id]!
        let ready = node.ready()
        queue += ready.messages
        if let snapshot = ready.snapshot { store.applySnapshot(snapshot) }
        store.append(ready.entries)
        if let hardState = ready.hardState { store.setHardState(hardState) }
        queue += ready.messagesAfterPersist
        applied[id]! += ready.committedEntries
        readStates[id, default: []] += ready.readStates
        node.advance(ready)
    }

    /// Delivers queued messages (and those they cause) until the network is quiet.
    func deliverAll(filter: (Message) -> Bool = { _ in true }) {
        settleReadies()
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            precondition(steps < 100_000, "messages did not settle")
            let message = queue.removeFirst()
            if filter(message) && !cut.contains([message.from, message.to]) {
                nodes[message.to]?.step(message)
            }
            settleReadies()
        }
    }

    /// Ticks `id` until it starts an election, then lets the cluster settle.
    func elect(_ id: NodeID) {
        let node = nodes[id]!
        var ticks = 0
        while node.role == .follower {
            ticks += 1
            precondition(ticks < 100, "node \(id) never campaigned")
            node.tick()
        }
        deliverAll()
    }

    /// Ticks every node `count` times, settling messages after each round.
    func tickAll(_ count: Int) {
        for _ in 0..<count {
            for id in nodes.keys.sorted() { nodes[id]!.tick() }
            deliverAll()
        }
    }

    var leaders: [NodeID] { nodes.keys.sorted().filter { nodes[$0]!.role == .leader } }

    func isolate(_ id: NodeID) {
        for other in nodes.keys where other != id {
            cut.insert([id, other])
            cut.insert([other, id])
        }
    }

    func heal() { cut = [] }
}

func entries(_ terms: [UInt64]) -> [Entry] {
    terms.enumerated().map { Entry(term: $1, index: UInt64($0 + 1), data: [UInt8($0)]) }
}
