import BinaryCoding
import Raft

/// Identifies one client request across retries: a retried write carries the same id and is
/// applied at most once.
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

/// A write as it travels through the replicated log.
struct KVCommand: Equatable {
    var request: RequestID
    var operation: KVOperation

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u64(request.client)
        writer.u64(request.sequence)
        switch operation {
        case .put(let key, let value):
            writer.u8(1); writer.string(key); writer.string(value)
        case .cas(let key, let expected, let new):
            writer.u8(2); writer.string(key); writer.optionalString(expected); writer.string(new)
        case .delete(let key):
            writer.u8(3); writer.string(key)
        case .get:
            preconditionFailure("reads are not written to the log")
        }
        return writer.bytes
    }

    init(request: RequestID, operation: KVOperation) {
        self.request = request
        self.operation = operation
    }

    init?(encoded: [UInt8]) {
        var reader = BinaryReader(encoded)
        guard let client = reader.u64(), let sequence = reader.u64(), let kind = reader.u8() else { return nil }
        request = RequestID(client: client, sequence: sequence)
        switch kind {
        case 1:
            guard let key = reader.string(), let value = reader.string() else { return nil }
            operation = .put(key: key, value: value)
        case 2:
            guard let key = reader.string(), let expected = reader.optionalString(), let new = reader.string() else { return nil }
            operation = .cas(key: key, expected: expected, new: new)
        case 3:
            guard let key = reader.string() else { return nil }
            operation = .delete(key: key)
        default:
            return nil
        }
        guard reader.isAtEnd else { return nil }
    }
}

/// The replicated state: keys and values, plus each client's last request and its result so
/// that a retried write returns the first result instead of applying twice.
struct KVStateMachine: Equatable {
    private(set) var values: [String: String] = [:]
    private(set) var sessions: [UInt64: (sequence: UInt64, result: KVResult)] = [:]
    private(set) var appliedIndex: UInt64 = 0

    static func == (lhs: KVStateMachine, rhs: KVStateMachine) -> Bool {
        lhs.encoded == rhs.encoded
    }

    /// Applies the write in `entry` (empty entries and membership changes only move the index).
    mutating func apply(_ entry: Entry) -> (RequestID, KVResult)? {
        precondition(entry.index == appliedIndex + 1, "applying \(entry.index) after \(appliedIndex)")
        appliedIndex = entry.index
        guard entry.kind == .normal, !entry.data.isEmpty else { return nil }
        guard let command = KVCommand(encoded: entry.data) else {
            preconditionFailure("undecodable command at index \(entry.index)")
        }
        if let session = sessions[command.request.client], session.sequence >= command.request.sequence {
            // A retry of the last request is answered as the first time; an older duplicate
            // (its client has moved on) changes nothing and nobody waits for it.
            return session.sequence == command.request.sequence ? (command.request, session.result) : nil
        }
        let result = execute(command.operation)
        sessions[command.request.client] = (command.request.sequence, result)
        return (command.request, result)
    }

    private mutating func execute(_ operation: KVOperation) -> KVResult {
        switch operation {
        case .put(let key, let value):
            values[key] = value
            return .done
        case .delete(let key):
            values[key] = nil
            return .done
        case .cas(let key, let expected, let new):
            guard values[key] == expected else { return .swapped(false) }
            values[key] = new
            return .swapped(true)
        case .get(let key):
            return .value(values[key])
        }
    }

    func read(_ key: String) -> String? { values[key] }

    // MARK: - Snapshots

    /// A deterministic encoding (sorted keys) of the whole state.
    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u64(appliedIndex)
        writer.u64(UInt64(values.count))
        for key in values.keys.sorted() {
            writer.string(key)
            writer.string(values[key]!)
        }
        writer.u64(UInt64(sessions.count))
        for client in sessions.keys.sorted() {
            let session = sessions[client]!
            writer.u64(client)
            writer.u64(session.sequence)
            switch session.result {
            case .done: writer.u8(0)
            case .value(let value): writer.u8(1); writer.optionalString(value)
            case .swapped(let swapped): writer.u8(swapped ? 3 : 2)
            }
        }
        return writer.bytes
    }

    init() {}

    init?(encoded: [UInt8]) {
        var reader = BinaryReader(encoded)
        guard let applied = reader.u64(), let count = reader.u64(), count < 1 << 20 else { return nil }
        appliedIndex = applied
        for _ in 0..<count {
            guard let key = reader.string(), let value = reader.string() else { return nil }
            values[key] = value
        }
        guard let sessionCount = reader.u64(), sessionCount < 1 << 20 else { return nil }
        for _ in 0..<sessionCount {
            guard let client = reader.u64(), let sequence = reader.u64(), let kind = reader.u8() else { return nil }
            let result: KVResult
            switch kind {
            case 0: result = .done
            case 1:
                guard let value = reader.optionalString() else { return nil }
                result = .value(value)
            case 2, 3: result = .swapped(kind == 3)
            default: return nil
            }
            sessions[client] = (sequence, result)
        }
        guard reader.isAtEnd else { return nil }
    }
}

// MARK: - Strings in binary records

extension BinaryWriter {
    mutating func string(_ value: String) { blob(Array(value.utf8)) }

    mutating func optionalString(_ value: String?) { optionalBlob(value.map { Array($0.utf8) }) }
}

extension BinaryReader {
    mutating func string() -> String? { blob().map { String(decoding: $0, as: UTF8.self) } }

    mutating func optionalString() -> String?? {
        optionalBlob().map { $0.map { String(decoding: $0, as: UTF8.self) } }
    }
}
