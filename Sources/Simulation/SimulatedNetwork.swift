import Raft

/// The per-seed intensity of faults: message loss, duplication and reordering, message and
/// window sizes (small ones make log repair and snapshots frequent), how often a member
/// compacts its log, and how often a fault is injected.
struct FaultProfile: CustomStringConvertible {
    var dropPerMille: UInt64
    var duplicatePerMille: UInt64
    var reorderPerMille: UInt64
    /// Longest extra delay of a reordered message.
    var reorderMilliseconds: UInt64
    var maxMessageBytes: Int
    var maxInflightMessages: Int
    /// Entry bytes in flight to one follower (0: no byte bound).
    var maxInflightBytes: Int
    var compactEvery: UInt64
    var faultGap: ClosedRange<UInt64>
    /// How long a disk write takes to sync: slow disks widen the window in which a crash loses
    /// writes whose messages may already be out.
    var syncMilliseconds: ClosedRange<UInt64>
    /// How long a crashed member stays down before it restarts.
    var restartMilliseconds: ClosedRange<UInt64>
    /// Which faults this seed favours.
    var mix: FaultMix
    /// Leaders answer reads from a lease (with the clock-drift bound the simulated clocks keep)
    /// instead of a heartbeat round.
    var leaseReads: Bool
    /// Concurrent clients and the keys they share (few keys: much contention per key).
    var clients: Int
    var keys: Int

    init(drawingFrom random: inout SeededRandom) {
        func pick<T>(_ choices: [T]) -> T { choices[Int(random.next(below: UInt64(choices.count)))] }
        dropPerMille = pick([0, 10, 50, 150])
        duplicatePerMille = pick([0, 20, 100])
        reorderPerMille = pick([0, 50, 200])
        reorderMilliseconds = pick([80, 250])
        maxMessageBytes = pick([1, 64, 256, 1 << 20])
        maxInflightMessages = pick([1, 2, 8, 256])
        maxInflightBytes = pick([0, 100, 4096])
        compactEvery = pick([8, 32, 10_000])
        faultGap = pick([20...100, 50...300, 200...600])
        syncMilliseconds = pick([1...3, 1...10, 5...40])
        restartMilliseconds = pick([5...40, 20...120, 20...600])
        clients = pick([3, 5, 8])
        keys = pick([1, 3, 6])
        mix = pick(FaultMix.allCases)
        leaseReads = pick([false, true])
    }

    func nextFaultDelay(_ random: inout SeededRandom) -> UInt64 { Self.draw(faultGap, &random) }
    func syncDelay(_ random: inout SeededRandom) -> UInt64 { Self.draw(syncMilliseconds, &random) }
    func restartDelay(_ random: inout SeededRandom) -> UInt64 { Self.draw(restartMilliseconds, &random) }

    private static func draw(_ range: ClosedRange<UInt64>, _ random: inout SeededRandom) -> UInt64 {
        range.lowerBound + random.next(below: range.upperBound - range.lowerBound + 1)
    }

    var description: String {
        "\(clients) clients on \(keys) keys, drop \(dropPerMille)‰ duplicate \(duplicatePerMille)‰ "
            + "reorder \(reorderPerMille)‰ by up to \(reorderMilliseconds) ms, "
            + "message \(maxMessageBytes) B, window \(maxInflightMessages) / \(maxInflightBytes) B, compact every \(compactEvery), "
            + "fault every \(faultGap.lowerBound)–\(faultGap.upperBound) ms (\(mix.rawValue)), "
            + "sync \(syncMilliseconds.lowerBound)–\(syncMilliseconds.upperBound) ms, "
            + "restart after \(restartMilliseconds.lowerBound)–\(restartMilliseconds.upperBound) ms, "
            + (leaseReads ? "lease reads" : "ReadIndex reads")
    }
}

/// Links currently cut (directed: a one-way partition cuts one direction only).
struct NetworkState {
    struct Link: Hashable {
        var from: NodeID
        var to: NodeID
    }

    var cut: Set<Link> = []

    func isCut(from: NodeID, to: NodeID) -> Bool { cut.contains(Link(from: from, to: to)) }

    mutating func cutBothWays(_ first: [NodeID], _ second: [NodeID]) {
        for a in first {
            for b in second where a != b {
                cut.insert(Link(from: a, to: b))
                cut.insert(Link(from: b, to: a))
            }
        }
    }
}

extension Simulation {
    func chance(perMille: UInt64) -> Bool {
        perMille > 0 && random.next(below: 1000) < perMille
    }

    /// Simulated latency of one hop: 1–4 ms, sometimes much more while faults are on (which
    /// also reorders messages).
    func networkDelay() -> UInt64 {
        var delay = 1 + random.next(below: 4)
        if !healed && chance(perMille: profile.reorderPerMille) {
            delay += random.next(below: profile.reorderMilliseconds)
        }
        return delay
    }

    /// Puts a peer message on the wire, where it may be lost, duplicated or delayed. A
    /// snapshot's data is read from the sender's pinned state now, as the transport would
    /// stream it, so that what arrives does not depend on the sender's later state.
    func transmit(_ message: Message) throws {
        var message = message
        message.snapshot = try message.snapshot?.materialized()
        try invariants.observeSent(message)
        if !healed && chance(perMille: profile.dropPerMille) {
            log("drop \(describe(message))")
            if message.kind == .snapshot {
                nodes[message.from]?.loop?.snapshotReport(peer: message.to, delivered: false)
            }
            return
        }
        queue.schedule(.deliver(message), at: now + networkDelay())
        if !healed && chance(perMille: profile.duplicatePerMille) {
            // A copy arrives again later, often much later (a retransmission or a stale replay).
            queue.schedule(
                .deliver(message), at: now + networkDelay() + random.next(below: profile.reorderMilliseconds))
        }
    }

    func deliver(_ message: Message) throws {
        guard let target = nodes[message.to], let loop = target.loop,
            !network.isCut(from: message.from, to: message.to)
        else {
            log("lost \(describe(message))")
            if message.kind == .snapshot, let sender = nodes[message.from] {
                sender.loop?.snapshotReport(peer: message.to, delivered: false)
                try drive(sender)
            }
            return
        }
        log("deliver \(describe(message))")
        messageTap?(message)
        // Members here are honest: one refused message means the core's own traffic breaks the
        // rules it enforces on peers.
        if let reason = loop.receive([message], from: message.from) {
            throw InvariantViolation(
                property: "honest traffic accepted", detail: "\(describe(message)) refused: \(reason)")
        }
        try drive(target)
        if message.kind == .snapshot, let sender = nodes[message.from] {
            sender.loop?.snapshotReport(peer: message.to, delivered: true)
            try drive(sender)
        }
    }

    func describe(_ message: Message) -> String {
        var text = "\(message.kind.rawValue) \(message.from)→\(message.to) term \(message.term)"
        switch message.kind {
        case .append:
            text += " after \(message.index)/\(message.logTerm) +\(message.entries.count) commit \(message.commit)"
        case .appendResponse:
            text +=
                message.reject
                ? " reject \(message.index) hint \(message.rejectHint)/\(message.logTerm)" : " match \(message.index)"
        case .vote, .preVote:
            text += " last \(message.index)/\(message.logTerm)"
        case .voteResponse, .preVoteResponse:
            text += message.reject ? " rejected" : " granted"
        case .heartbeat:
            text += " commit \(message.commit)"
        case .snapshot:
            text += " at \(message.snapshot?.metadata.index ?? 0)"
        case .readIndexResponse:
            text += " index \(message.index)"
        case .propose:
            text += " +\(message.entries.count)"
        default:
            break
        }
        return text
    }
}
