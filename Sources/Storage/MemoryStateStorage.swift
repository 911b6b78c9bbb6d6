import Synchronization

/// A `StateStorage` in memory, for the simulator and unit tests: the same limits, atomic
/// batches and consistent views as the engine, and its durability model — a batch written
/// `.buffered` survives a process crash but not a power loss (`losePowerNow()` rolls back to
/// the last `.synced` write).
public final class MemoryStateStorage: StateStorage {
    private struct Contents {
        var current: [ColumnFamily: [[UInt8]: [UInt8]]] = [:]
        var synced: [ColumnFamily: [[UInt8]: [UInt8]]] = [:]
    }

    private let contents = Mutex(Contents())

    public init() {}

    public func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try validateKey(key, family)
        return contents.withLock { $0.current[family]?[key] }
    }

    public func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int, direction: ScanDirection) throws -> ScanPage
    {
        try validateScanRequest(family, range, limit: limit)
        let records = contents.withLock { $0.current[family] ?? [:] }
        return Self.page(of: records, range, limit: limit, direction: direction)
    }

    public func write(_ batch: WriteBatch, durability: Durability) throws {
        try batch.validate()
        contents.withLock { contents in
            for operation in batch.operations {
                switch operation {
                case .put(let family, let key, let value):
                    contents.current[family, default: [:]][key] = value
                case .delete(let family, let key):
                    contents.current[family]?[key] = nil
                case .deleteRange(let family, let from, let to):
                    contents.current[family] = contents.current[family]?.filter { key, _ in
                        key.lexicographicallyPrecedes(from) || !key.lexicographicallyPrecedes(to)
                    }
                }
            }
            if durability == .synced { contents.synced = contents.current }
        }
    }

    /// The same contract as the engine's bulk load, as ordinary batches.
    public func replace(_ family: ColumnFamily, ranges: [KeyRange], with next: () throws -> BulkRecord?) throws -> Int {
        var batch = try WriteBatch.clearing(family, ranges)
        var records = 0
        while let record = try next() {
            try BulkLoader.checkInside(ranges, record.key, family)
            if batch.count >= 1000 || batch.payloadBytes >= 16 << 20 {
                try write(batch, durability: .buffered)
                batch = WriteBatch()
            }
            batch.put(family, key: record.key, value: record.value)
            records += 1
        }
        try write(batch, durability: .synced)
        return records
    }

    public func makeStateView() throws -> any StateStorageView {
        MemoryStateView(records: contents.withLock { $0.current })
    }

    /// A power loss: what was written `.buffered` since the last `.synced` write is gone.
    public func losePowerNow() {
        contents.withLock { $0.current = $0.synced }
    }

    /// The same paging as the engine's iterator: at most `limit` entries and about
    /// `StorageLimits.maxScanBytes` of values, with the range that continues the scan.
    static func page(
        of records: [[UInt8]: [UInt8]], _ range: KeyRange, limit: Int, direction: ScanDirection
    ) -> ScanPage {
        let inRange = records.keys.filter { key in
            !key.lexicographicallyPrecedes(range.lower)
                && (range.upper.map { key.lexicographicallyPrecedes($0) } ?? true)
        }
        let ordered =
            direction == .forward
            ? inRange.sorted { $0.lexicographicallyPrecedes($1) }
            : inRange.sorted { $1.lexicographicallyPrecedes($0) }
        var entries: [StorageEntry] = []
        var valueBytes = 0
        for key in ordered {
            if entries.count == limit || valueBytes >= StorageLimits.maxScanBytes {
                let resume =
                    direction == .forward
                    ? KeyRange(from: key, to: range.upper) : KeyRange(from: range.lower, to: key + [0])
                return ScanPage(entries: entries, resume: resume)
            }
            let value = records[key]!
            valueBytes += value.count
            entries.append(StorageEntry(key: key, value: value))
        }
        return ScanPage(entries: entries, resume: nil)
    }
}

/// A frozen copy of a `MemoryStateStorage` (copy-on-write: free until the storage changes).
final class MemoryStateView: StateStorageView {
    private var records: [ColumnFamily: [[UInt8]: [UInt8]]]?

    init(records: [ColumnFamily: [[UInt8]: [UInt8]]]) { self.records = records }

    func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try validateKey(key, family)
        return try live()[family]?[key]
    }

    func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int, direction: ScanDirection) throws -> ScanPage {
        try validateScanRequest(family, range, limit: limit)
        return MemoryStateStorage.page(of: try live()[family] ?? [:], range, limit: limit, direction: direction)
    }

    func close() { records = nil }

    private func live() throws -> [ColumnFamily: [[UInt8]: [UInt8]]] {
        guard let records else { throw StorageError.invalidArgument("the view was closed") }
        return records
    }
}
