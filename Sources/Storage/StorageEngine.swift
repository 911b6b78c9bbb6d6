import Logging
import Sealing
import Synchronization

/// The node's storage: RocksDB underneath, every value compressed (when that helps) and sealed
/// with AES-256-GCM under a data key wrapped by the master key.
///
/// Guarantees:
/// - A read returns exactly the bytes written for that column family and key, or throws; altered,
///   truncated, moved or wrongly keyed data is never returned.
/// - A `WriteBatch` is atomic across column families; `.synced` writes are on disk when the call returns.
/// - Data-key rotation, re-sealing and master-key rotation run while reads and writes go on.
///
/// Thread-safe. Reads and writes run concurrently; key switches and `close` briefly exclude them.
public final class StorageEngine: @unchecked Sendable {
    /// Envelope domain for values stored by the engine (other subsystems use other domains).
    static let sealDomain: UInt8 = 1

    public let path: String
    let database: RocksDatabase
    let keyRing: KeyRing
    let logger: Logger
    /// Shared: every read and write. Exclusive: key switches, re-seal chunks, `close`.
    let gate = ReadWriteLock()
    /// Serialises key operations (rotation, re-seal, retirement, master-key rotation).
    let keyOperations = Mutex<Void>(())
    let views = Mutex(ViewRegistry())
    /// Guarded by `gate`: written only under exclusive, read under shared.
    private var isClosed = false

    private init(path: String, database: RocksDatabase, keyRing: KeyRing, logger: Logger) {
        self.path = path
        self.database = database
        self.keyRing = keyRing
        self.logger = logger
    }

    /// Opens (or creates) the store at `path`, unlocking its data keys with `masterKey`.
    public static func open(
        path: String,
        masterKey: any MasterKeyProvider,
        options: StorageOptions = StorageOptions(),
        logger: Logger = Logger(label: "crm.storage")
    ) throws -> StorageEngine {
        var logger = logger
        logger[metadataKey: "db"] = "\(path)"
        let database = try RocksDatabase(path: path, options: options)
        do {
            let (ring, created) = try KeyRing.load(database: database, provider: masterKey)
            let engine = StorageEngine(path: path, database: database, keyRing: ring, logger: logger)
            let state = ring.current.state
            logger.info(
                "storage opened",
                metadata: [
                    "created": "\(created)", "active_key": "\(state.activeKeyID)",
                    "live_keys": "\(state.liveKeyIDs)", "master_key": "\(masterKey.keyID)",
                    "reseal": "\(state.reseal.map { "\($0.family) scanned=\($0.scanned)" } ?? "none")",
                ])
            if state.reseal?.passComplete == true { try engine.retireDrainedKeys() }
            return engine
        } catch {
            database.close()
            throw error
        }
    }

    /// Waits for in-flight calls, releases open views and closes RocksDB. Later calls throw `.closed`.
    public func close() {
        gate.withExclusive {
            guard !isClosed else { return }
            for snapshot in views.withLock({ $0.removeAll() }) { database.release(snapshot) }
            database.close()
            isClosed = true
            logger.info("storage closed")
        }
    }

    deinit { close() }

    /// Runs `body` while the engine is open, concurrently with other reads and writes.
    func whileOpen<R>(_ body: () throws -> R) throws -> R {
        try gate.withShared {
            guard !isClosed else { throw StorageError.closed }
            return try body()
        }
    }

    /// Runs `body` with every read and write held off.
    func exclusively<R>(_ body: () throws -> R) throws -> R {
        try gate.withExclusive {
            guard !isClosed else { throw StorageError.closed }
            return try body()
        }
    }

    // MARK: - Reads

    /// The value stored at `key`, verified, or nil if absent.
    public func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try validateKey(key, family)
        return try whileOpen { try read(family, key, readOptions: nil) }
    }

    func read(_ family: ColumnFamily, _ key: [UInt8], readOptions: ReadOptions?) throws -> [UInt8]? {
        let keys = keyRing.keySet
        return try key.withUnsafeBytes { keyBytes in
            try database.withValue(family, keyBytes, readOptions: readOptions) { stored in
                guard let stored else { return nil }
                return try openSealed(stored, family: family, key: key, keys: keys)
            }
        }
    }

    /// Verifies and opens stored bytes; the error names the place.
    func openSealed(
        _ stored: UnsafeRawBufferPointer, family: ColumnFamily, key: [UInt8], keys: KeySet
    ) throws -> [UInt8] {
        do {
            return try key.withUnsafeBytes { keyBytes in
                try SealedValue.open(stored, location: location(family, keyBytes), keys: keys.lookup)
            }
        } catch let failure as SealFailure {
            throw StorageError.unreadable(family: family, key: key, reason: failure)
        }
    }

    func location(_ family: ColumnFamily, _ key: UnsafeRawBufferPointer) -> SealedValue.Location {
        SealedValue.Location(domain: Self.sealDomain, scope: family.rawValue, key: key)
    }

    /// Up to `limit` entries of `range`, in order; see `ScanPage.resume` to continue.
    public func scan(
        _ family: ColumnFamily, _ range: KeyRange, limit: Int,
        direction: ScanDirection = .forward
    ) throws -> ScanPage {
        try whileOpen { try scan(family, range, limit: limit, direction: direction, snapshot: nil) }
    }

    // MARK: - Writes

    public func put(_ family: ColumnFamily, _ key: [UInt8], _ value: [UInt8], durability: Durability) throws {
        var batch = WriteBatch()
        batch.put(family, key: key, value: value)
        try write(batch, durability: durability)
    }

    public func delete(_ family: ColumnFamily, _ key: [UInt8], durability: Durability) throws {
        var batch = WriteBatch()
        batch.delete(family, key: key)
        try write(batch, durability: durability)
    }

    /// Seals and writes `batch` atomically. With `.synced`, it is on disk when this returns.
    public func write(_ batch: WriteBatch, durability: Durability) throws {
        try batch.validate()
        guard !batch.isEmpty else { return }
        // Shared gate across seal and write: a key switch cannot happen between them, so every
        // value written was sealed with a key that the re-seal pass will still see as live.
        try whileOpen {
            let key = keyRing.keySet.active
            let rocksBatch = RocksBatch(database: database)
            // One buffer for the whole batch: RocksDB copies each sealed value into its batch.
            var scratch = [UInt8](
                repeating: 0, count: SealedValue.sealedCapacity(forPlaintext: batch.largestValueBytes))
            for operation in batch.operations {
                switch operation {
                case .put(let family, let itemKey, let value):
                    try scratch.withUnsafeMutableBytes { buffer in
                        let count = try sealValue(value, family: family, key: itemKey, with: key, into: buffer)
                        itemKey.withUnsafeBytes { keyBytes in
                            rocksBatch.put(
                                family, key: keyBytes, value: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                        }
                    }
                case .delete(let family, let itemKey):
                    rocksBatch.delete(family, key: itemKey)
                case .deleteRange(let family, let from, let to):
                    rocksBatch.deleteRange(family, from: from, to: to)
                }
            }
            assert(rocksBatch.count == batch.count)
            try database.write(rocksBatch, durability: durability)
        }
    }

    func sealValue(
        _ value: [UInt8], family: ColumnFamily, key: [UInt8], with dataKey: DataKey,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws -> Int {
        try sealing {
            try value.withUnsafeBytes { valueBytes in
                try key.withUnsafeBytes { keyBytes in
                    try SealedValue.seal(valueBytes, key: dataKey, location: location(family, keyBytes), into: buffer)
                }
            }
        }
    }

    func sealValue(_ value: [UInt8], family: ColumnFamily, key: [UInt8], with dataKey: DataKey) throws -> [UInt8] {
        var sealed = [UInt8](repeating: 0, count: SealedValue.sealedCapacity(forPlaintext: value.count))
        let count = try sealed.withUnsafeMutableBytes { buffer in
            try sealValue(value, family: family, key: key, with: dataKey, into: buffer)
        }
        sealed.removeLast(sealed.count - count)
        return sealed
    }

    // MARK: - Maintenance

    /// Flushes every memtable to SST files and syncs the WAL.
    public func flush() throws {
        try whileOpen {
            for family in ColumnFamily.allCases { try database.flush(family) }
            try database.syncWAL()
        }
    }

    /// Compacts `families` (every data family by default) into one sorted run each, so that reads
    /// consult one file per level; blocks until done. Reads and writes go on meanwhile.
    public func compact(_ families: [ColumnFamily] = ColumnFamily.dataFamilies) throws {
        for family in families {
            // The gate is taken per family, so key switches wait for one family at most.
            try whileOpen { database.compact(family) }
        }
    }

    /// Flushes memtables, then waits (up to `timeout`) until no flush or compaction is running or
    /// queued. Returns false if work remained at the deadline.
    public func settle(timeout: Duration = .seconds(120)) throws -> Bool {
        try flush()
        // Polled with the gate taken per check, never held across the wait.
        return try waitUntilQuiet(timeout: timeout) { try whileOpen { database.hasBackgroundWork } }
    }

    /// RocksDB's estimate of the number of keys in `family` (fast, approximate).
    public func estimatedKeyCount(_ family: ColumnFamily) throws -> UInt64 {
        try whileOpen { database.integerProperty("rocksdb.estimate-num-keys", family: family) ?? 0 }
    }
}
