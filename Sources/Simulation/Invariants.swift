import Raft

/// A safety property that failed, with what was seen.
public struct InvariantViolation: Error, CustomStringConvertible {
    public var property: String
    public var detail: String
    public var description: String { "\(property): \(detail)" }
}

/// Raft's safety properties, checked incrementally as the simulation runs (each check costs
/// O(new entries), so they can run after every step).
///
/// - Election safety: at most one leader per term; each member votes for at most one
///   candidate per term (checked on the votes as they are sent).
/// - Log matching: an (index, term) pair names one entry everywhere, ever — the same payload
///   and the same term before it — which by induction makes two logs with a common (index,
///   term) identical up to there.
/// - Leader completeness / state machine safety: an index, once committed anywhere, keeps
///   the same entry; every member applies the same entry at each index, so applied sequences
///   are prefixes of one another; snapshots taken at one index hold the same state.
/// - Read safety: a read point is never below an index committed before the read arrived.
struct Invariants {
    private var leaderOfTerm: [UInt64: NodeID] = [:]
    private var voteOf: [Ballot: NodeID] = [:]

    struct Ballot: Hashable {
        var voter: NodeID
        var term: UInt64
    }
    /// Every entry ever persisted: index → term → (term before it, payload digest).
    private var persisted: [UInt64: [UInt64: EntryDigest]] = [:]
    private var committedTerm: [UInt64: UInt64] = [:]
    private var appliedEntry: [UInt64: EntryDigest] = [:]
    private var snapshotDigest: [UInt64: UInt64] = [:]

    struct EntryDigest: Equatable {
        var previousTerm: UInt64
        var payload: UInt64
    }

    /// `message` is leaving its sender: a granted vote binds the voter for that whole term.
    mutating func observeSent(_ message: Message) throws(InvariantViolation) {
        guard message.kind == .voteResponse, !message.reject else { return }
        let ballot = Ballot(voter: message.from, term: message.term)
        if let earlier = voteOf[ballot], earlier != message.to {
            throw InvariantViolation(
                property: "vote safety",
                detail: "node \(message.from) voted for \(earlier) and for \(message.to) in term \(message.term)")
        }
        voteOf[ballot] = message.to
    }

    mutating func observeLeader(_ node: NodeID, term: UInt64) throws(InvariantViolation) {
        if let existing = leaderOfTerm[term], existing != node {
            throw InvariantViolation(
                property: "election safety", detail: "nodes \(existing) and \(node) both lead term \(term)")
        }
        leaderOfTerm[term] = node
    }

    /// `entries` were just persisted by `node` after an entry of `previousTerm`.
    mutating func observePersisted(_ entries: [Entry], previousTerm: UInt64, node: NodeID) throws(InvariantViolation) {
        var before = previousTerm
        for entry in entries {
            let digest = EntryDigest(previousTerm: before, payload: Self.digest(entry))
            if let known = persisted[entry.index]?[entry.term], known != digest {
                throw InvariantViolation(
                    property: "log matching",
                    detail: "node \(node) persisted a different entry at index \(entry.index) term \(entry.term)")
            }
            // No check against the committed entries here: writes are asynchronous, so a
            // lagging member may still be writing an entry that a newer leader already
            // replaced (its next write replaces it, and it never acknowledged the old one as
            // part of the quorum that committed the index).
            persisted[entry.index, default: [:]][entry.term] = digest
            before = entry.term
        }
    }

    /// `node` reports index `index` (of term `term`) committed.
    mutating func observeCommitted(index: UInt64, term: UInt64, node: NodeID) throws(InvariantViolation) {
        if let known = committedTerm[index], known != term {
            throw InvariantViolation(
                property: "committed entry changed",
                detail: "index \(index) was committed with term \(known); node \(node) commits term \(term)")
        }
        committedTerm[index] = term
        highestCommitted = max(highestCommitted, index)
    }

    /// The highest index committed anywhere so far.
    private(set) var highestCommitted: UInt64 = 0

    /// A read point `index` was granted to a read that arrived when `committedBefore` was the
    /// highest index committed anywhere: a linearizable read sees at least that much.
    func observeReadIndex(
        _ index: UInt64, committedBefore: UInt64, node: NodeID, request: String
    ) throws(InvariantViolation) {
        guard index < committedBefore else { return }
        throw InvariantViolation(
            property: "read safety",
            detail: "node \(node) got read index \(index) for \(request), but index \(committedBefore) "
                + "was already committed when the read arrived")
    }

    mutating func observeApplied(_ entry: Entry, node: NodeID) throws(InvariantViolation) {
        let digest = EntryDigest(previousTerm: entry.term, payload: Self.digest(entry))
        if let known = appliedEntry[entry.index], known != digest {
            throw InvariantViolation(
                property: "state machine safety",
                detail: "node \(node) applied a different entry at index \(entry.index) (term \(entry.term))")
        }
        appliedEntry[entry.index] = digest
    }

    mutating func observeSnapshot(index: UInt64, data: [UInt8], node: NodeID) throws(InvariantViolation) {
        let digest = Self.fnv1a(data)
        if let known = snapshotDigest[index], known != digest {
            throw InvariantViolation(
                property: "state machine safety",
                detail: "node \(node) holds a different state at snapshot index \(index)")
        }
        snapshotDigest[index] = digest
    }

    private static func digest(_ entry: Entry) -> UInt64 {
        fnv1a(entry.data) ^ UInt64(entry.kind.rawValue) << 56
    }

    /// FNV-1a: deterministic across processes (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01B3
        }
        return hash
    }
}
