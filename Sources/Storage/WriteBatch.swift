/// A group of writes applied atomically across column families: after a crash either all of
/// them are present or none is. Values are sealed when the batch is written, under the data key
/// active at that moment.
public struct WriteBatch: Sendable {
    enum Operation: Sendable {
        case put(ColumnFamily, key: [UInt8], value: [UInt8])
        case delete(ColumnFamily, key: [UInt8])
        /// Deletes keys in [from, to).
        case deleteRange(ColumnFamily, from: [UInt8], to: [UInt8])
    }

    private(set) var operations: [Operation] = []
    /// Key and value bytes held, for the batch size limit.
    public private(set) var payloadBytes = 0
    /// The largest value put, for sizing the sealing buffer.
    private(set) var largestValueBytes = 0

    public init() {}

    public var count: Int { operations.count }
    public var isEmpty: Bool { operations.isEmpty }

    public mutating func put(_ family: ColumnFamily, key: [UInt8], value: [UInt8]) {
        operations.append(.put(family, key: key, value: value))
        payloadBytes += key.count + value.count
        largestValueBytes = max(largestValueBytes, value.count)
    }

    public mutating func delete(_ family: ColumnFamily, key: [UInt8]) {
        operations.append(.delete(family, key: key))
        payloadBytes += key.count
    }

    /// Deletes every key in [from, to) of `family` (a single range tombstone in RocksDB).
    public mutating func deleteRange(_ family: ColumnFamily, from: [UInt8], to: [UInt8]) {
        operations.append(.deleteRange(family, from: from, to: to))
        payloadBytes += from.count + to.count
    }

    /// Checks every limit before anything is sealed or written.
    func validate() throws {
        guard operations.count <= StorageLimits.maxBatchOperations else {
            throw StorageError.invalidArgument(
                "batch of \(operations.count) operations exceeds the limit of \(StorageLimits.maxBatchOperations); split it"
            )
        }
        guard payloadBytes <= StorageLimits.maxBatchBytes else {
            throw StorageError.invalidArgument(
                "batch of \(payloadBytes) bytes exceeds the limit of \(StorageLimits.maxBatchBytes); split it")
        }
        for operation in operations {
            switch operation {
            case .put(let family, let key, let value):
                try validateKey(key, family)
                guard value.count <= StorageLimits.maxValueBytes else {
                    throw StorageError.invalidArgument(
                        "value of \(value.count) bytes for \(family) exceeds the limit of \(StorageLimits.maxValueBytes)"
                    )
                }
            case .delete(let family, let key):
                try validateKey(key, family)
            case .deleteRange(let family, let from, let to):
                try validateKey(from, family)
                try validateKey(to, family)
                guard from.lexicographicallyPrecedes(to) else {
                    throw StorageError.invalidArgument("range delete in \(family) needs from < to")
                }
            }
        }
    }
}

/// Keys are non-empty, bounded, and never address the engine's own key ring.
func validateKey(_ key: [UInt8], _ family: ColumnFamily) throws {
    guard family != .keyring else {
        throw StorageError.invalidArgument(
            "the keyring column family is managed by the engine and cannot be used directly")
    }
    guard !key.isEmpty else { throw StorageError.invalidArgument("empty key in \(family)") }
    guard key.count <= StorageLimits.maxKeyBytes else {
        throw StorageError.invalidArgument(
            "key of \(key.count) bytes in \(family) exceeds the limit of \(StorageLimits.maxKeyBytes)")
    }
}
