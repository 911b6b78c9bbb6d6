/// What a state machine needs of its storage: point reads, bounded ordered scans, atomic batches
/// and consistent views. The sealed RocksDB engine (`StorageEngine`) is the one a member runs;
/// `MemoryStateStorage` is the one the simulator and unit tests run, with the same limits and
/// the same durability model.
public protocol StateStorage: AnyObject, Sendable {
    func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]?
    /// Up to `limit` entries of `range` in key order; `ScanPage.resume` continues.
    func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int, direction: ScanDirection) throws -> ScanPage
    /// Applies `batch` atomically; with `.synced`, it survives a power loss once this returns.
    func write(_ batch: WriteBatch, durability: Durability) throws
    /// A consistent point-in-time view of every family; release it with `close()`.
    func makeStateView() throws -> any StateStorageView
    /// Replaces everything in `ranges` (bounded) of `family` with the records `next` yields
    /// until nil, in ascending key order; durable when it returns. Returns how many it loaded.
    /// A failure midway leaves the ranges partly loaded.
    func replace(_ family: ColumnFamily, ranges: [KeyRange], with next: () throws -> BulkRecord?) throws -> Int
}

/// A consistent view of a `StateStorage` (see `StorageView`).
public protocol StateStorageView: AnyObject {
    func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]?
    func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int, direction: ScanDirection) throws -> ScanPage
    func close()
}

extension StateStorage {
    public func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int) throws -> ScanPage {
        try scan(family, range, limit: limit, direction: .forward)
    }
}

extension StateStorageView {
    public func scan(_ family: ColumnFamily, _ range: KeyRange, limit: Int) throws -> ScanPage {
        try scan(family, range, limit: limit, direction: .forward)
    }
}

extension StorageEngine: StateStorage {
    public func makeStateView() throws -> any StateStorageView { try makeView() }
}

extension StorageView: StateStorageView {}
