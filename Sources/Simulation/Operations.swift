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

    public var key: String {
        switch self {
        case .put(let key, _), .get(let key), .cas(let key, _, _), .delete(let key): return key
        }
    }

    public var isWrite: Bool {
        if case .get = self { return false }
        return true
    }

    public var description: String {
        switch self {
        case .put(let key, let value): return "put(\(key), \(value))"
        case .get(let key): return "get(\(key))"
        case .cas(let key, let expected, let new): return "cas(\(key), \(expected ?? "nil") -> \(new))"
        case .delete(let key): return "delete(\(key))"
        }
    }
}

/// What an operation returned.
public enum KVResult: Equatable, Sendable, CustomStringConvertible {
    case done
    case value(String?)
    case swapped(Bool)

    public var description: String {
        switch self {
        case .done: return "ok"
        case .value(let value): return "=\(value ?? "nil")"
        case .swapped(let swapped): return swapped ? "swapped" : "not-swapped"
        }
    }
}
