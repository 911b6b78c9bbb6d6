/// A message between members (or from the local node to itself, for proposals).
public struct Message: Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// Pre-vote request: "would you vote for me in term `term`?" (no state changes).
        case preVote
        case preVoteResponse
        case vote
        case voteResponse
        /// Entries after (`index`, `logTerm`), and the leader's commit index.
        case append
        /// Success: `index` is the last index the follower now matches. Rejection: `index` is
        /// the index that was rejected, `rejectHint`/`logTerm` help the leader skip back.
        case appendResponse
        case heartbeat
        case heartbeatResponse
        case snapshot
        /// A follower asks the leader for a read index (`context` names the request).
        case readIndex
        case readIndexResponse
        /// Leadership transfer: the target starts an election at once, skipping pre-vote.
        case timeoutNow
        /// A proposal forwarded by a follower to the leader.
        case propose
    }

    public var kind: Kind
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    /// The term of the entry at `index` (append, vote: last log term; rejections: hint term).
    public var logTerm: UInt64 = 0
    public var index: UInt64 = 0
    public var entries: [Entry] = []
    public var commit: UInt64 = 0
    public var reject: Bool = false
    public var rejectHint: UInt64 = 0
    public var snapshot: Snapshot? = nil
    /// Opaque request context (read requests; vote requests from a leadership transfer).
    public var context: [UInt8] = []

    public init(kind: Kind, from: NodeID, to: NodeID, term: UInt64) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
    }

    public var isResponse: Bool {
        switch kind {
        case .preVoteResponse, .voteResponse, .appendResponse, .heartbeatResponse, .readIndexResponse: return true
        default: return false
        }
    }
}

/// Metadata of a snapshot: the last index and term it covers and the configuration at that point.
public struct SnapshotMetadata: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var configuration: Configuration

    public init(index: UInt64, term: UInt64, configuration: Configuration) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}

/// A snapshot of the applied state up to `metadata.index`. Its data is either held in memory
/// (`data`: the simulator, tests, a log written before snapshots were streamed) or read in
/// pieces from `source` (a leader's pinned state, a file a follower received), so that a
/// store larger than memory moves between members without ever being held whole.
public struct Snapshot: Equatable, Sendable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]
    public var source: (any SnapshotSource)?

    public init(metadata: SnapshotMetadata, data: [UInt8], source: (any SnapshotSource)? = nil) {
        precondition(source == nil || data.isEmpty, "a snapshot holds its data in memory or in a source, not both")
        self.metadata = metadata
        self.data = data
        self.source = source
    }

    /// Whether there is data to restore from (the log of a leader keeps only metadata).
    public var hasData: Bool { source != nil || !data.isEmpty }

    /// A reader from the first byte of the data, wherever it is.
    public func openReader() throws -> any SnapshotReader {
        try source?.openReader() ?? BytesSnapshotReader(data)
    }

    /// The same snapshot with its data read into memory (for the simulator's network, which
    /// carries whole messages; never for a store of real size).
    public func materialized() throws -> Snapshot {
        guard let source else { return self }
        return Snapshot(metadata: metadata, data: try source.readAll())
    }

    public static func == (lhs: Snapshot, rhs: Snapshot) -> Bool {
        lhs.metadata == rhs.metadata && lhs.data == rhs.data && lhs.source === rhs.source
    }
}

/// Snapshot data that lives outside the message: read in order, a piece at a time.
public protocol SnapshotSource: AnyObject, Sendable {
    /// A new reader from the first byte; readers are independent of each other.
    func openReader() throws -> any SnapshotReader
    /// Makes the data survive a crash, before the log records the snapshot as its own.
    func makeDurable() throws
}

extension SnapshotSource {
    /// The whole data in memory: for the simulator and tests, whose states are small.
    public func readAll() throws -> [UInt8] {
        let reader = try openReader()
        var bytes: [UInt8] = []
        while let piece = try reader.read(maxBytes: 1 << 20) { bytes += piece }
        return bytes
    }
}

/// Reads one snapshot's data in order.
public protocol SnapshotReader: AnyObject {
    /// The next 1...`maxBytes` bytes, or nil after the last.
    func read(maxBytes: Int) throws -> [UInt8]?
}

/// Reads data held in memory.
public final class BytesSnapshotReader: SnapshotReader {
    private let bytes: [UInt8]
    private var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public func read(maxBytes: Int) throws -> [UInt8]? {
        precondition(maxBytes > 0)
        guard offset < bytes.count else { return nil }
        let end = min(bytes.count, offset + maxBytes)
        defer { offset = end }
        return Array(bytes[offset..<end])
    }
}

/// The answer to a read request: once the applied index reaches `index`, a read reflects every
/// write committed before the request was made (linearizable).
public struct ReadState: Equatable, Sendable {
    public var index: UInt64
    public var context: [UInt8]
}
