import KVStore
import Raft

/// Subject keys taken out of archived log entries. A segment keeps entries for as long as data
/// archives are kept, much longer than key archives: so the values a transaction puts under a
/// workspace's vault (`<workspace>/v/`, wrapped subject keys) are cut out of the entry and kept
/// apart, in the segment's key stream, which ages out with the key archives. An entry is put
/// back together exactly (the same command) when its values are at hand.
public enum LogRedaction {
    /// One value cut out of an entry: the operation's position in its transaction.
    public struct Removed: Equatable, Sendable {
        public var operation: UInt16
        public var value: [UInt8]
    }

    private static let vault = Array("/v/".utf8)

    /// Whether a transaction key (relative to the CRM prefix) is a vault key.
    static func isVaultKey(_ key: [UInt8]) -> Bool {
        key.count > 4 + vault.count && key[4...].starts(with: vault)
    }

    /// The entry's data with every vault value emptied, and the values cut out (none: the
    /// data unchanged).
    public static func redact(_ entry: Entry) -> (data: [UInt8], removed: [Removed]) {
        guard entry.kind == .normal,
            case .transaction(let session, let sequence, let owner, let time, var transaction)? =
                KVCommand(encoded: entry.data)
        else { return (entry.data, []) }
        var removed: [Removed] = []
        for (position, operation) in transaction.operations.enumerated() {
            switch operation {
            case .put(let key, let value) where isVaultKey(key):
                removed.append(Removed(operation: UInt16(position), value: value))
                transaction.operations[position] = .put(key: key, value: [])
            case .putStamped(let key, let value) where isVaultKey(key):
                removed.append(Removed(operation: UInt16(position), value: value))
                transaction.operations[position] = .putStamped(key: key, value: [])
            default:
                continue
            }
        }
        guard !removed.isEmpty else { return (entry.data, []) }
        let redacted = KVCommand.transaction(
            session: session, sequence: sequence, owner: owner, proposedAtMillis: time, transaction)
        return (redacted.encoded, removed)
    }

    /// The entry's data with `removed` put back; nil when they do not fit it (another entry's
    /// values, or a position that is not an emptied vault put).
    public static func restore(_ data: [UInt8], _ removed: [Removed]) -> [UInt8]? {
        guard !removed.isEmpty else { return data }
        guard
            case .transaction(let session, let sequence, let owner, let time, var transaction)? =
                KVCommand(encoded: data)
        else { return nil }
        for item in removed {
            let position = Int(item.operation)
            guard position < transaction.operations.count else { return nil }
            switch transaction.operations[position] {
            case .put(let key, let value) where isVaultKey(key) && value.isEmpty:
                transaction.operations[position] = .put(key: key, value: item.value)
            case .putStamped(let key, let value) where isVaultKey(key) && value.isEmpty:
                transaction.operations[position] = .putStamped(key: key, value: item.value)
            default:
                return nil
            }
        }
        return KVCommand.transaction(
            session: session, sequence: sequence, owner: owner, proposedAtMillis: time, transaction
        ).encoded
    }

    /// The proposer's clock in an entry's command (0: none), which the state machine's log time
    /// follows: how a restore finds the last entry at or before a time.
    public static func proposedAtMillis(_ entry: Entry) -> UInt64 {
        guard entry.kind == .normal, let command = KVCommand(encoded: entry.data) else { return 0 }
        switch command {
        case .openSession(_, _, let time), .closeSession(_, _, let time), .write(_, _, _, let time, _),
            .transaction(_, _, _, let time, _):
            return time
        case .memberEndpoints:
            return 0
        }
    }
}
