import Raft

/// Leader completeness, checked at the moment a leader commits: no voter that lacks the newly
/// committed entry may be able to gather a quorum of votes, in any state its log is or could
/// fall back to (its log in memory, or what its disk holds should it crash now).
///
/// Why the check cannot fire on a correct run: a correct leader of term T commits index c only
/// once a quorum M of its voters has persisted an entry of term T at c or beyond. A voter that
/// lacks the entry at c holds no entry of a term above T (every such entry comes from a leader
/// that has c, and log matching would then give it c), and none of term T at or beyond c, so
/// each member of M, in either of its states, is more up to date and refuses it; at most
/// |voters| − |M| < quorum can grant. A commit that breaks the rule (an entry of an older term
/// committed by counting replicas, an acknowledgement sent before its write) shows up here at
/// once, without waiting for the later election that would overwrite it.
extension Simulation {
    struct VotingLog {
        var lastIndex: UInt64
        var lastTerm: UInt64
        /// Entries up to here are compacted: committed, hence held.
        var compactedThrough: UInt64
        var term: (UInt64) -> UInt64?

        func holds(index: UInt64, term expected: UInt64) -> Bool {
            index <= compactedThrough || term(index) == expected
        }

        /// Raft's vote rule: would a voter with this log grant `candidate`?
        func grants(_ candidate: VotingLog) -> Bool {
            candidate.lastTerm > lastTerm || (candidate.lastTerm == lastTerm && candidate.lastIndex >= lastIndex)
        }
    }

    /// The states `node`'s log is in or could fall back to after a crash.
    func votingLogs(of node: SimulatedNode) -> [VotingLog] {
        let store = node.store
        var logs = [
            VotingLog(
                lastIndex: store.lastIndex, lastTerm: store.term(at: store.lastIndex)!,
                compactedThrough: store.snapshotMetadata.index, term: { store.term(at: $0) })
        ]
        if let raft = node.raft, let lastTerm = raft.term(at: raft.lastIndex) {
            logs.append(
                VotingLog(
                    lastIndex: raft.lastIndex, lastTerm: lastTerm, compactedThrough: raft.firstIndex - 1,
                    term: { raft.term(at: $0) }))
        }
        return logs
    }

    /// `leader` has just advanced its commit index to `index` (an entry of `term`).
    func checkCommitSafety(leader: NodeID, index: UInt64, term: UInt64) throws {
        guard let raft = nodes[leader]?.raft else { return }
        let voters = raft.configuration.voters.sorted()
        let logs = Dictionary(
            uniqueKeysWithValues: voters.compactMap { id in nodes[id].map { (id, votingLogs(of: $0)) } })
        for candidate in voters {
            for state in logs[candidate] ?? [] where !state.holds(index: index, term: term) {
                let granting = voters.filter { voter in logs[voter]?.contains { $0.grants(state) } ?? false }
                guard granting.count >= raft.configuration.quorum else { continue }
                throw InvariantViolation(
                    property: "leader completeness",
                    detail: "leader \(leader) (term \(raft.term)) committed index \(index) of term \(term), yet node "
                        + "\(candidate), whose log (last \(state.lastIndex)/\(state.lastTerm)) lacks it, could win an "
                        + "election with the votes of \(granting)")
            }
        }
    }
}
