/// Resource settings for the RocksDB instance under a `StorageEngine`, set explicitly so that a
/// node's memory and file-descriptor use is known in advance rather than left to RocksDB defaults.
///
/// Memory bound, roughly: `blockCacheBytes + totalWriteBufferBytes` plus RocksDB's own overhead
/// (table readers for at most `maxOpenFiles` files). With the defaults that is about 192 MiB.
public struct StorageOptions: Sendable, Equatable {
    /// One LRU block cache shared by every column family; index and filter blocks are charged to
    /// it too, so it is a real bound. Default 64 MiB.
    public var blockCacheBytes: Int = 64 << 20
    /// Size of one memtable of one column family before it is flushed to an SST. Default 16 MiB.
    public var writeBufferBytes: Int = 16 << 20
    /// Memtables a column family may hold (one active, the rest waiting for flush). Default 3.
    public var maxWriteBuffersPerFamily: Int = 3
    /// Total memtable memory across all column families (RocksDB's `db_write_buffer_size`);
    /// reaching it forces a flush. Default 128 MiB.
    public var totalWriteBufferBytes: Int = 128 << 20
    /// SST files kept open at once (each costs a descriptor and its index). Default 512, well
    /// under the usual 1024 descriptor limit, leaving room for sockets.
    public var maxOpenFiles: Int = 512
    /// Background flush and compaction threads. Default 2 (the machine's cores).
    public var backgroundJobs: Int = 2
    /// When the write-ahead logs exceed this, the oldest memtables are flushed so the WAL can be
    /// recycled. Default 256 MiB.
    public var maxTotalWALBytes: Int = 256 << 20
    /// Bloom filter bits per key for point lookups (10 ≈ 1% false positives). Default 10.
    public var bloomBitsPerKey: Double = 10
    /// RocksDB's own info log (never contains values): size before rolling, and files kept.
    public var infoLogMaxBytes: Int = 16 << 20
    public var infoLogFilesKept: Int = 4

    public init() {}

    /// Small footprint for tests and tools that open many databases at once.
    public static var compact: StorageOptions {
        var options = StorageOptions()
        options.blockCacheBytes = 8 << 20
        options.writeBufferBytes = 4 << 20
        options.maxWriteBuffersPerFamily = 2
        options.totalWriteBufferBytes = 32 << 20
        options.maxOpenFiles = 128
        options.maxTotalWALBytes = 64 << 20
        options.infoLogMaxBytes = 1 << 20
        options.infoLogFilesKept = 2
        return options
    }

    func validate() throws {
        func require(_ condition: Bool, _ message: String) throws {
            if !condition { throw StorageError.invalidArgument("storage option \(message)") }
        }
        try require(blockCacheBytes >= 1 << 20, "blockCacheBytes must be at least 1 MiB")
        try require(writeBufferBytes >= 1 << 20, "writeBufferBytes must be at least 1 MiB")
        try require((2...16).contains(maxWriteBuffersPerFamily), "maxWriteBuffersPerFamily must be 2...16")
        try require(totalWriteBufferBytes >= writeBufferBytes, "totalWriteBufferBytes must be ≥ writeBufferBytes")
        try require(maxOpenFiles >= 64, "maxOpenFiles must be at least 64")
        try require((1...64).contains(backgroundJobs), "backgroundJobs must be 1...64")
        try require(maxTotalWALBytes >= 4 << 20, "maxTotalWALBytes must be at least 4 MiB")
        try require((0...32).contains(bloomBitsPerKey), "bloomBitsPerKey must be 0...32")
    }
}

/// Hard limits on what the engine accepts; larger input is refused with `invalidArgument`.
public enum StorageLimits {
    public static let maxKeyBytes = 4096
    /// Same as the envelope's limit: 64 MiB.
    public static let maxValueBytes = 64 << 20
    public static let maxBatchOperations = 100_000
    public static let maxBatchBytes = 256 << 20
    /// One scan page returns at most this many entries...
    public static let maxScanEntries = 10_000
    /// ...and stops early once this many value bytes have been gathered.
    public static let maxScanBytes = 64 << 20
}

/// Whether a write must be on stable storage before `write` returns.
public enum Durability: Sendable {
    /// fsync'd (fdatasync of the WAL) before returning: survives power loss. Raft needs this for
    /// hard state and log entries before it acknowledges or sends anything that depends on them.
    case synced
    /// Written to the WAL in the OS page cache: survives a process crash, not a power loss.
    case buffered
}
