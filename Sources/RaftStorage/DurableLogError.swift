import Storage

/// Why the durable log could not open or write. Every case says what was found and what the
/// operator can do; none of them lets damaged data reach the consensus core.
public enum DurableLogError: Error, CustomStringConvertible {
    /// The hard state (term, vote, commit) cannot be read. Starting without it could cast a
    /// second vote in a term, so the member refuses to start.
    case damagedHardState(String)
    case damagedSnapshot(String)
    /// An entry at or below the commit index is damaged or missing: committed data was lost on
    /// this member.
    case damagedCommittedEntry(index: UInt64, reason: String)
    /// The request does not fit the log as it is (a caller bug; nothing was written).
    case invalidRequest(String)
    /// A storage write failed part-way; the store refuses further use until it is reopened,
    /// which recovers whatever the disk holds.
    case writeFailed(StorageError)
    case storage(StorageError)

    static let repair =
        "This member cannot serve. Repair it from the cluster: stop it, move its data directory "
        + "aside, and re-add it as a learner so that it catches up by snapshot (or restore it from a verified backup)."

    public var description: String {
        switch self {
        case .damagedHardState(let reason):
            return "the Raft hard state is unreadable (\(reason)). \(Self.repair)"
        case .damagedSnapshot(let reason):
            return "the Raft snapshot is unreadable (\(reason)). \(Self.repair)"
        case .damagedCommittedEntry(let index, let reason):
            return "committed Raft log entry \(index) is damaged or missing (\(reason)). \(Self.repair)"
        case .invalidRequest(let why):
            return "durable log request refused: \(why)"
        case .writeFailed(let error):
            return "a durable log write failed (\(error)); the log must be reopened before further use"
        case .storage(let error):
            return error.description
        }
    }
}
