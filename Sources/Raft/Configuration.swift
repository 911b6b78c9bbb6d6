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
    case addLearner(NodeID)
    case promote(NodeID)
    case remove(NodeID)

    public var node: NodeID {
        switch self {
        case .addLearner(let id), .promote(let id), .remove(let id): return id
        }
    }

    /// 1 byte of kind, 8 bytes of node id (big-endian).
    public var encoded: [UInt8] {
        let kind: UInt8
        switch self {
        case .addLearner: kind = 1
        case .promote: kind = 2
        case .remove: kind = 3
        }
        return [kind] + (0..<8).map { UInt8(truncatingIfNeeded: node >> (56 - 8 * UInt64($0))) }
    }

    public init?(encoded bytes: [UInt8]) {
        guard bytes.count == 9 else { return nil }
        let id = bytes[1...].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard id != 0 else { return nil }
        switch bytes[0] {
        case 1: self = .addLearner(id)
        case 2: self = .promote(id)
        case 3: self = .remove(id)
        default: return nil
        }
    }
}
