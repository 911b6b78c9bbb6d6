/// The members of the cluster: voters decide elections and commitment; learners receive the log
/// but never vote or count towards a quorum.
public struct Configuration: Equatable, Sendable {
    public private(set) var voters: Set<NodeID>
    public private(set) var learners: Set<NodeID>

    public init(voters: Set<NodeID>, learners: Set<NodeID> = []) {
        precondition(!voters.contains(0) && !learners.contains(0), "node id 0 is reserved")
        precondition(voters.isDisjoint(with: learners), "a member is either a voter or a learner")
        self.voters = voters
        self.learners = learners
    }

    /// A configuration read from bytes: nil (instead of a trap) for a repeated id, id 0, or a
    /// member listed as both voter and learner.
    public init?(decodedVoters voters: [NodeID], learners: [NodeID]) {
        let voterSet = Set(voters)
        let learnerSet = Set(learners)
        guard voterSet.count == voters.count, learnerSet.count == learners.count, !voterSet.contains(0),
            !learnerSet.contains(0), voterSet.isDisjoint(with: learnerSet)
        else { return nil }
        self.init(voters: voterSet, learners: learnerSet)
    }

    public var members: Set<NodeID> { voters.union(learners) }

    /// Votes needed for a majority of the voters.
    public var quorum: Int { voters.count / 2 + 1 }

    public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) }

    /// The highest index that a majority of voters have (given each voter's match index).
    public func committedIndex(match: (NodeID) -> UInt64) -> UInt64 {
        guard !voters.isEmpty else { return 0 }
        let sorted = voters.map(match).sorted(by: >)
        return sorted[quorum - 1]
    }

    /// Outcome of an election given the votes received so far.
    public func electionResult(_ votes: [NodeID: Bool]) -> ElectionResult {
        var granted = 0
        var rejected = 0
        for voter in voters {
            switch votes[voter] {
            case true?: granted += 1
            case false?: rejected += 1
            case nil: break
            }
        }
        if granted >= quorum { return .won }
        if rejected > voters.count - quorum { return .lost }
        return .pending
    }

    public enum ElectionResult: Equatable, Sendable { case won, lost, pending }

    /// Applies one change; the caller has checked that it is valid (see `validate`).
    mutating func apply(_ change: ConfigurationChange) {
        switch change {
        case .bootstrap(let founders):
            voters = Set(founders)
        case .addLearner(let id):
            learners.insert(id)
        case .promote(let id):
            learners.remove(id)
            voters.insert(id)
        case .remove(let id):
            voters.remove(id)
            learners.remove(id)
        }
    }

    /// Why `change` cannot be applied to this configuration, or nil if it can.
    public func validate(_ change: ConfigurationChange) -> String? {
        switch change {
        case .bootstrap(let founders):
            if !members.isEmpty { return "the cluster already has members; bootstrap only creates a new cluster" }
            if founders.isEmpty || founders.contains(0) {
                return "a new cluster needs at least one voter, and node id 0 is reserved"
            }
        case .addLearner(let id):
            if id == 0 { return "node id 0 is reserved" }
            if voters.contains(id) { return "node \(id) is already a voter" }
            if learners.contains(id) { return "node \(id) is already a learner" }
        case .promote(let id):
            if !learners.contains(id) { return "node \(id) is not a learner; add it as a learner first" }
        case .remove(let id):
            if !members.contains(id) { return "node \(id) is not a member" }
            if voters == [id] { return "cannot remove the last voter" }
        }
        return nil
    }
}

/// One membership change. Changes are made one at a time (see README: a single learner is
/// added, caught up, then promoted; one voter is removed at a time), so any two successive
/// voter sets differ by at most one member and their majorities always overlap.
public enum ConfigurationChange: Equatable, Sendable {
    /// The founding voters of a new cluster: the first entry of every log (see `Bootstrap`),
    /// so that a member that joins later learns them by replaying the log.
    case bootstrap([NodeID])
    case addLearner(NodeID)
    case promote(NodeID)
    case remove(NodeID)

    /// 1 byte of kind, then 8 bytes (big-endian) per node id: one id, or the founders.
    public var encoded: [UInt8] {
        let (kind, ids): (UInt8, [NodeID])
        switch self {
        case .bootstrap(let founders): (kind, ids) = (4, founders)
        case .addLearner(let id): (kind, ids) = (1, [id])
        case .promote(let id): (kind, ids) = (2, [id])
        case .remove(let id): (kind, ids) = (3, [id])
        }
        var bytes = [kind]
        for id in ids {
            bytes += (0..<8).map { UInt8(truncatingIfNeeded: id >> (56 - 8 * UInt64($0))) }
        }
        return bytes
    }

    public init?(encoded bytes: [UInt8]) {
        guard bytes.count >= 9, (bytes.count - 1) % 8 == 0 else { return nil }
        let ids = stride(from: 1, to: bytes.count, by: 8).map { start in
            bytes[start..<start + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        guard !ids.contains(0) else { return nil }
        switch bytes[0] {
        case 1 where ids.count == 1: self = .addLearner(ids[0])
        case 2 where ids.count == 1: self = .promote(ids[0])
        case 3 where ids.count == 1: self = .remove(ids[0])
        case 4 where Set(ids).count == ids.count: self = .bootstrap(ids)
        default: return nil
        }
    }
}

/// How a brand-new cluster starts: every founding member's log begins with one committed entry
/// naming the founders, and its initial configuration is empty until that entry is applied.
/// (A configuration held only in a snapshot at index 0 would never reach members added later.)
public enum Bootstrap {
    /// The first entry of every founding member's log.
    public static func firstEntry(founders: [NodeID]) -> Entry {
        precondition(!founders.isEmpty && !founders.contains(0), "a cluster needs founders with non-zero ids")
        return Entry(
            term: 1, index: 1, kind: .configurationChange,
            data: ConfigurationChange.bootstrap(founders.sorted()).encoded)
    }

    /// The hard state that goes with it: term 1, no vote, the founding entry committed.
    public static let hardState = HardState(term: 1, vote: 0, commit: 1)
}
