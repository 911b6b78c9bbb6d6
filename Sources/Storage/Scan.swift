/// A range of keys: `lower` inclusive, `upper` exclusive (nil = to the end of the family).
public struct KeyRange: Sendable, Equatable {
    public var lower: [UInt8]
    public var upper: [UInt8]?

    /// Whether `key` is in [lower, upper).
    public func contains(_ key: [UInt8]) -> Bool {
        !key.lexicographicallyPrecedes(lower) && (upper.map { key.lexicographicallyPrecedes($0) } ?? true)
    }

    public init(from lower: [UInt8] = [], to upper: [UInt8]? = nil) {
        self.lower = lower
        self.upper = upper
    }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: [UInt8]) -> KeyRange {
        KeyRange(from: prefix, to: KeyEncoding.prefixEnd(prefix))
    }
}

public enum ScanDirection: Sendable {
    case forward
    /// From the largest key below `upper` downwards.
    case reverse
}

public struct StorageEntry: Sendable, Equatable {
    public let key: [UInt8]
    public let value: [UInt8]
}

/// One bounded page of a scan. When `resume` is set, more entries remain: scan again with it.
public struct ScanPage: Sendable {
    public let entries: [StorageEntry]
    /// The range that continues this scan, or nil if the range is exhausted.
    public let resume: KeyRange?
}

extension StorageEngine {
    /// Scans `range` in key order (or reverse), returning at most `limit` entries and at most
    /// about `StorageLimits.maxScanBytes` of values. Every value is verified before it is returned.
    func scan(
        _ family: ColumnFamily, _ range: KeyRange, limit: Int, direction: ScanDirection,
        snapshot: Snapshot?
    ) throws -> ScanPage {
        try validateScanRequest(family, range, limit: limit)
        let iterator = database.makeIterator(
            family, snapshot: snapshot, lower: range.lower.isEmpty ? nil : range.lower,
            upper: range.upper)
        switch direction {
        case .forward: iterator.seekToFirst()
        case .reverse: iterator.seekToLast()
        }
        let keys = keyRing.keySet
        var entries: [StorageEntry] = []
        var valueBytes = 0
        while iterator.isValid {
            if entries.count == limit || valueBytes >= StorageLimits.maxScanBytes {
                let next = Array(iterator.key)
                let resume =
                    direction == .forward
                    ? KeyRange(from: next, to: range.upper)
                    : KeyRange(from: range.lower, to: next + [0]) // `next` itself is still to come
                return ScanPage(entries: entries, resume: resume)
            }
            let key = Array(iterator.key)
            let value = try openSealed(iterator.value, family: family, key: key, keys: keys)
            valueBytes += value.count
            entries.append(StorageEntry(key: key, value: value))
            switch direction {
            case .forward: iterator.next()
            case .reverse: iterator.previous()
            }
        }
        try iterator.checkError()
        return ScanPage(entries: entries, resume: nil)
    }
}

/// The checks every scan passes before it reads anything (the engine's and the in-memory one's).
func validateScanRequest(_ family: ColumnFamily, _ range: KeyRange, limit: Int) throws {
    guard family != .keyring else {
        throw StorageError.invalidArgument("the keyring column family is managed by the engine and cannot be read")
    }
    guard (1...StorageLimits.maxScanEntries).contains(limit) else {
        throw StorageError.invalidArgument("scan limit \(limit) must be between 1 and \(StorageLimits.maxScanEntries)")
    }
    if let upper = range.upper, !range.lower.lexicographicallyPrecedes(upper) {
        throw StorageError.invalidArgument("scan range needs lower < upper")
    }
    guard range.lower.count <= StorageLimits.maxKeyBytes + 1, (range.upper?.count ?? 0) <= StorageLimits.maxKeyBytes + 1
    else {
        throw StorageError.invalidArgument("scan bound longer than \(StorageLimits.maxKeyBytes) bytes")
    }
}
