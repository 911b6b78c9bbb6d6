/// The column families of a node's store. Each holds one kind of data; see the README's
/// "Storage keyspace" section for the key layout inside each.
public enum ColumnFamily: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Raft log entries, keyed by index (8 bytes, big-endian).
    case raftLog = 1
    /// Raft hard state (term, vote, commit) and snapshot metadata.
    case raftState = 2
    /// The applied state machine: KV data and the CRM records built on it.
    case stateMachine = 3
    /// Node metadata: cluster id, membership, applied index, schema version.
    case metadata = 4
    /// The key ring: data keys wrapped by the master key, and rotation state. Managed only by the
    /// engine; the public read and write calls refuse it.
    case keyring = 5

    /// The families callers read and write.
    public static let dataFamilies: [ColumnFamily] = [.raftLog, .raftState, .stateMachine, .metadata]

    /// The RocksDB column family name.
    public var name: String {
        switch self {
        case .raftLog: return "raft_log"
        case .raftState: return "raft_state"
        case .stateMachine: return "state_machine"
        case .metadata: return "metadata"
        case .keyring: return "keyring"
        }
    }

    public var description: String { name }
}
