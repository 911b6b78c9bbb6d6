/// Identifies a member of the cluster. 0 is reserved for "none".
public typealias NodeID = UInt64

/// One record of the replicated log.
public struct Entry: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        /// Application data (may be empty: a new leader appends one empty entry of its term).
        case normal = 0
        /// A membership change; `data` is an encoded `ConfigurationChange`.
        case configurationChange = 1
    }

    public var term: UInt64
    public var index: UInt64
    public var kind: Kind
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: Kind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// Bytes counted against size limits (payload plus a fixed allowance for the fields).
    public var sizeBytes: Int { data.count + 24 }
}

/// What must survive a crash besides the log: the current term, the vote cast in it, and the
/// commit index (so a restarted node does not re-apply from zero).
public struct HardState: Equatable, Sendable {
    public var term: UInt64
    /// Whom this node voted for in `term`, or 0.
    public var vote: NodeID
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID = 0, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The role a node plays in its current term.
public enum Role: String, Sendable {
    case follower
    /// Asking for pre-votes: would the others vote for me if I started an election?
    case preCandidate = "pre-candidate"
    case candidate
    case leader
}

/// The part of a node's state that is not persisted: who leads, and in which role this node is.
public struct SoftState: Equatable, Sendable {
    public var leader: NodeID
    public var role: Role
}

/// Source of randomness injected into the core (election timeouts); seeded in simulations.
public protocol RandomSource {
    /// A uniformly distributed value.
    mutating func next() -> UInt64
}

/// A small, fast, seedable generator (SplitMix64) for simulations and tests.
public struct SeededRandom: RandomSource, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    /// A value in `0..<bound` (bound > 0).
    public mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        return next() % bound
    }
}
