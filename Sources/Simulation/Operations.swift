import KVStore

/// Identifies one client request across retries: a retried write carries the same id (its
/// client's session and sequence number) and is applied at most once.
public struct RequestID: Hashable, Sendable, CustomStringConvertible {
    public var client: UInt64
    public var sequence: UInt64

    public var description: String { "c\(client)#\(sequence)" }
}

/// An operation on the simulated key-value store.
public enum KVOperation: Equatable, Sendable, CustomStringConvertible {
    case put(key: String, value: String)
    case get(key: String)
    /// Sets `new` if the current value is `expected` (nil: the key is absent).
    case cas(key: String, expected: String?, new: String)
    case delete(key: String)
    /// A transaction (or a read) on the CRM records of the transaction workload: checked by
    /// the records' invariants, not by the registers' linearizability.
    case record(RecordOperation)

    public var key: String {
        switch self {
        case .put(let key, _), .get(let key), .cas(let key, _, _), .delete(let key): return key
        case .record(let operation): return "record \(operation.id)"
        }
    }

    public var isRecord: Bool {
        if case .record = self { return true }
        return false
    }

    public var isWrite: Bool {
        switch self {
        case .get, .record(.read): return false
        default: return true
        }
    }

    public var description: String {
        switch self {
        case .put(let key, let value): return "put(\(key), \(value))"
        case .get(let key): return "get(\(key))"
        case .cas(let key, let expected, let new): return "cas(\(key), \(expected ?? "nil") -> \(new))"
        case .delete(let key): return "delete(\(key))"
        case .record(let operation): return operation.description
        }
    }
}

/// What an operation returned.
public enum KVResult: Equatable, Sendable, CustomStringConvertible {
    case done
    case value(String?)
    case swapped(Bool)
    case transaction(TransactionOutcome)
    /// A record read (nil: absent).
    case record(RecordState?)

    public var description: String {
        switch self {
        case .transaction(let outcome): return "\(outcome)"
        case .record(let found?): return "token \(found.token) v\(found.version)"
        case .record(nil): return "absent"
        case .done: return "ok"
        case .value(let value): return "=\(value ?? "nil")"
        case .swapped(let swapped): return swapped ? "swapped" : "not-swapped"
        }
    }
}
