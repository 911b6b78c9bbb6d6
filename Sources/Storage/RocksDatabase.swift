import CRocksDB
import Sealing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The thin layer over RocksDB's C API. All of the engine's unsafe pointer handling for RocksDB
/// is here; everything above it deals in Swift arrays and buffer pointers scoped to a call.
/// Visible inside this package only (the benchmark uses it as the unsealed baseline): nothing
/// outside the package can write around the sealing.
///
/// The RocksDB handle is thread-safe. This class is not responsible for lifetime races: the
/// engine guarantees (with its gate lock) that no call is in flight when `close` runs.
package final class RocksDatabase: @unchecked Sendable {
    /// Column family names in handle order: RocksDB requires "default"; the engine leaves it empty.
    static let familyNames = ["default"] + ColumnFamily.allCases.map(\.name)

    let path: String
    let db: OpaquePointer
    private var handles: [OpaquePointer]
    let options: OpaquePointer
    private let tableOptions: OpaquePointer
    private let cache: OpaquePointer
    private let syncedWrite: OpaquePointer
    private let bufferedWrite: OpaquePointer
    private let checkedRead: ReadOptions
    private var isClosed = false

    package init(path: String, options settings: StorageOptions) throws {
        try settings.validate()
        self.path = path
        options = rocksdb_options_create()
        tableOptions = rocksdb_block_based_options_create()
        cache = rocksdb_cache_create_lru(settings.blockCacheBytes)
        Self.configure(options, table: tableOptions, cache: cache, settings: settings)

        syncedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(syncedWrite, 1)
        bufferedWrite = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(bufferedWrite, 0)
        checkedRead = ReadOptions(snapshot: nil, verifyChecksums: true)

        let names = Self.familyNames.map { strdup($0) }
        defer { names.forEach { free($0) } }
        var namePointers: [UnsafePointer<CChar>?] = names.map { UnsafePointer($0) }
        var familyOptions: [OpaquePointer?] = Array(repeating: options, count: names.count)
        var opened = [OpaquePointer?](repeating: nil, count: names.count)
        var error: UnsafeMutablePointer<CChar>?
        let options = self.options
        let handle = namePointers.withUnsafeMutableBufferPointer { namesBuffer in
            familyOptions.withUnsafeMutableBufferPointer { optionsBuffer in
                opened.withUnsafeMutableBufferPointer { handlesBuffer in
                    rocksdb_open_column_families(
                        options, path, Int32(names.count), namesBuffer.baseAddress,
                        optionsBuffer.baseAddress, handlesBuffer.baseAddress, &error)
                }
            }
        }
        if let message = Self.take(error) {
            Self.destroy(options: options, table: tableOptions, cache: cache)
            rocksdb_writeoptions_destroy(syncedWrite)
            rocksdb_writeoptions_destroy(bufferedWrite)
            throw Self.classify("open \(path)", message)
        }
        guard let handle else {
            Self.destroy(options: options, table: tableOptions, cache: cache)
            throw StorageError.rocksdb(operation: "open \(path)", message: "no handle returned")
        }
        db = handle
        handles = opened.map { $0! }
    }

    private static func configure(
        _ options: OpaquePointer, table: OpaquePointer, cache: OpaquePointer, settings: StorageOptions
    ) {
        rocksdb_options_set_create_if_missing(options, 1)
        rocksdb_options_set_create_missing_column_families(options, 1)
        rocksdb_options_set_paranoid_checks(options, 1)
        rocksdb_options_set_max_open_files(options, Int32(settings.maxOpenFiles))
        rocksdb_options_set_max_background_jobs(options, Int32(settings.backgroundJobs))
        rocksdb_options_set_write_buffer_size(options, settings.writeBufferBytes)
        rocksdb_options_set_max_write_buffer_number(options, Int32(settings.maxWriteBuffersPerFamily))
        rocksdb_options_set_db_write_buffer_size(options, settings.totalWriteBufferBytes)
        rocksdb_options_set_max_total_wal_size(options, UInt64(settings.maxTotalWALBytes))
        // An incomplete last record (a write torn by a crash, never acknowledged) is dropped; a
        // damaged record before the end fails the open. Stopping replay there instead would
        // silently forget every later synced write — Raft entries and votes this member had
        // acknowledged — so the member must refuse to start and be repaired from the cluster.
        rocksdb_options_set_wal_recovery_mode(options, 0)
        rocksdb_options_set_bytes_per_sync(options, 1 << 20)
        rocksdb_options_set_max_log_file_size(options, settings.infoLogMaxBytes)
        rocksdb_options_set_keep_log_file_num(options, settings.infoLogFilesKept)
        // Values arrive sealed (AES-GCM output does not compress); LZ4 runs before sealing.
        rocksdb_options_set_compression(options, Int32(rocksdb_no_compression))

        rocksdb_block_based_options_set_block_cache(table, cache)
        rocksdb_block_based_options_set_cache_index_and_filter_blocks(table, 1)
        rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(table, 1)
        if settings.bloomBitsPerKey > 0 {
            rocksdb_block_based_options_set_filter_policy(
                table, rocksdb_filterpolicy_create_bloom_full(settings.bloomBitsPerKey))
        }
        rocksdb_block_based_options_set_checksum(table, 1) // CRC32c on every block
        rocksdb_block_based_options_set_format_version(table, 5)
        rocksdb_options_set_block_based_table_factory(options, table)
    }

    private static func destroy(options: OpaquePointer, table: OpaquePointer, cache: OpaquePointer) {
        rocksdb_options_destroy(options)
        rocksdb_block_based_options_destroy(table)
        rocksdb_cache_destroy(cache)
    }

    /// Closes the database. Must be called with no other call in flight; idempotent.
    package func close() {
        guard !isClosed else { return }
        isClosed = true
        for handle in handles { rocksdb_column_family_handle_destroy(handle) }
        handles = []
        rocksdb_close(db)
        rocksdb_writeoptions_destroy(syncedWrite)
        rocksdb_writeoptions_destroy(bufferedWrite)
        Self.destroy(options: options, table: tableOptions, cache: cache)
    }

    deinit { close() }

    func handle(_ family: ColumnFamily) -> OpaquePointer {
        precondition(!isClosed, "RocksDB used after close")
        return handles[Int(family.rawValue)]
    }

    // MARK: - Reads

    /// Calls `body` with the stored bytes (pinned, valid only during the call), or nil if absent.
    package func withValue<R>(
        _ family: ColumnFamily,
        _ key: UnsafeRawBufferPointer,
        readOptions: ReadOptions? = nil,
        _ body: (UnsafeRawBufferPointer?) throws -> R
    ) throws -> R {
        var error: UnsafeMutablePointer<CChar>?
        let slice = rocksdb_get_pinned_cf(
            db, (readOptions ?? checkedRead).pointer, handle(family),
            key.baseAddress?.assumingMemoryBound(to: CChar.self), key.count, &error)
        if let message = Self.take(error) {
            throw Self.classify("get", message, family: family, key: Array(key))
        }
        guard let slice else { return try body(nil) }
        defer { rocksdb_pinnableslice_destroy(slice) }
        var length = 0
        let start = rocksdb_pinnableslice_value(slice, &length)
        return try body(UnsafeRawBufferPointer(start: start, count: length))
    }

    func makeIterator(
        _ family: ColumnFamily, snapshot: Snapshot?, lower: [UInt8]?, upper: [UInt8]?,
        verifyChecksums: Bool = true
    ) -> RocksIterator {
        RocksIterator(
            database: self, db: db, handle: handle(family), family: family,
            snapshot: snapshot, lower: lower, upper: upper, verifyChecksums: verifyChecksums)
    }

    func makeSnapshot() -> Snapshot {
        Snapshot(pointer: rocksdb_create_snapshot(db))
    }

    func release(_ snapshot: Snapshot) {
        rocksdb_release_snapshot(db, snapshot.pointer)
    }

    // MARK: - Writes

    package func write(_ batch: RocksBatch, durability: Durability) throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(db, durability == .synced ? syncedWrite : bufferedWrite, batch.pointer, &error)
        if let message = Self.take(error) { throw Self.classify("write", message) }
    }

    // MARK: - Maintenance

    package func flush(_ family: ColumnFamily) throws {
        let flushOptions = rocksdb_flushoptions_create()
        defer { rocksdb_flushoptions_destroy(flushOptions) }
        rocksdb_flushoptions_set_wait(flushOptions, 1)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush_cf(db, flushOptions, handle(family), &error)
        if let message = Self.take(error) { throw Self.classify("flush \(family)", message) }
    }

    func syncWAL() throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush_wal(db, 1, &error)
        if let message = Self.take(error) { throw Self.classify("sync WAL", message) }
    }

    package func compact(_ family: ColumnFamily) {
        rocksdb_compact_range_cf(db, handle(family), nil, 0, nil, 0)
    }

    /// Whether flushes or compactions are running or queued anywhere in the database.
    package var hasBackgroundWork: Bool {
        let names = [
            "rocksdb.num-running-flushes", "rocksdb.num-running-compactions",
            "rocksdb.mem-table-flush-pending", "rocksdb.compaction-pending",
        ]
        return names.contains { name in
            ColumnFamily.allCases.contains { (integerProperty(name, family: $0) ?? 0) > 0 }
        }
    }

    /// A RocksDB integer property such as "rocksdb.estimate-num-keys".
    func integerProperty(_ name: String, family: ColumnFamily) -> UInt64? {
        guard let value = rocksdb_property_value_cf(db, handle(family), name) else { return nil }
        defer { rocksdb_free(value) }
        return UInt64(String(cString: value))
    }

    // MARK: - Errors

    static func take(_ error: UnsafeMutablePointer<CChar>?) -> String? {
        guard let error else { return nil }
        defer { rocksdb_free(error) }
        return String(cString: error)
    }

    static func classify(
        _ operation: String, _ message: String,
        family: ColumnFamily? = nil, key: [UInt8]? = nil
    ) -> StorageError {
        if message.hasPrefix("Corruption") {
            return .corruption(family: family, key: key, message: message)
        }
        return .rocksdb(operation: operation, message: message)
    }
}

/// A RocksDB point-in-time snapshot handle; released through the database that made it.
struct Snapshot: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// Read options (snapshot, checksum verification); owned, destroyed with the object.
package final class ReadOptions: @unchecked Sendable {
    let pointer: OpaquePointer

    init(snapshot: Snapshot?, verifyChecksums: Bool) {
        pointer = rocksdb_readoptions_create()
        rocksdb_readoptions_set_verify_checksums(pointer, verifyChecksums ? 1 : 0)
        if let snapshot { rocksdb_readoptions_set_snapshot(pointer, snapshot.pointer) }
    }

    deinit { rocksdb_readoptions_destroy(pointer) }
}

/// A RocksDB write batch: all of its operations are applied atomically or not at all.
package final class RocksBatch {
    let pointer: OpaquePointer
    private unowned let database: RocksDatabase

    package init(database: RocksDatabase) {
        self.database = database
        pointer = rocksdb_writebatch_create()
    }

    deinit { rocksdb_writebatch_destroy(pointer) }

    var count: Int { Int(rocksdb_writebatch_count(pointer)) }

    package func put(_ family: ColumnFamily, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        rocksdb_writebatch_put_cf(
            pointer, database.handle(family),
            key.baseAddress?.assumingMemoryBound(to: CChar.self), key.count,
            value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count)
    }

    package func put(_ family: ColumnFamily, key: [UInt8], value: [UInt8]) {
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in put(family, key: k, value: v) } }
    }

    func delete(_ family: ColumnFamily, key: [UInt8]) {
        key.withUnsafeBytes { k in
            rocksdb_writebatch_delete_cf(
                pointer, database.handle(family),
                k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count)
        }
    }

    /// Deletes keys in [from, to).
    func deleteRange(_ family: ColumnFamily, from: [UInt8], to: [UInt8]) {
        from.withUnsafeBytes { f in
            to.withUnsafeBytes { t in
                rocksdb_writebatch_delete_range_cf(
                    pointer, database.handle(family),
                    f.baseAddress?.assumingMemoryBound(to: CChar.self), f.count,
                    t.baseAddress?.assumingMemoryBound(to: CChar.self), t.count)
            }
        }
    }
}

/// An iterator over one column family, optionally at a snapshot and within [lower, upper).
/// `key` and `value` are valid until the next move.
final class RocksIterator {
    private let iterator: OpaquePointer
    private let readOptions: OpaquePointer
    private let bounds: [UnsafeMutableRawBufferPointer]
    private let database: RocksDatabase
    let family: ColumnFamily

    fileprivate init(
        database: RocksDatabase, db: OpaquePointer, handle: OpaquePointer, family: ColumnFamily,
        snapshot: Snapshot?, lower: [UInt8]?, upper: [UInt8]?, verifyChecksums: Bool
    ) {
        self.database = database
        self.family = family
        readOptions = rocksdb_readoptions_create()
        rocksdb_readoptions_set_verify_checksums(readOptions, verifyChecksums ? 1 : 0)
        if let snapshot { rocksdb_readoptions_set_snapshot(readOptions, snapshot.pointer) }
        // Bound keys must outlive the iterator: RocksDB keeps pointers to them.
        var owned: [UnsafeMutableRawBufferPointer] = []
        func copy(_ bytes: [UInt8]) -> UnsafeMutableRawBufferPointer {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            owned.append(buffer)
            return buffer
        }
        if let lower {
            let buffer = copy(lower)
            rocksdb_readoptions_set_iterate_lower_bound(
                readOptions, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), lower.count)
        }
        if let upper {
            let buffer = copy(upper)
            rocksdb_readoptions_set_iterate_upper_bound(
                readOptions, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), upper.count)
        }
        bounds = owned
        iterator = rocksdb_create_iterator_cf(db, readOptions, handle)
    }

    deinit {
        rocksdb_iter_destroy(iterator)
        rocksdb_readoptions_destroy(readOptions)
        bounds.forEach { $0.deallocate() }
    }

    var isValid: Bool { rocksdb_iter_valid(iterator) != 0 }
    func seekToFirst() { rocksdb_iter_seek_to_first(iterator) }
    func seekToLast() { rocksdb_iter_seek_to_last(iterator) }
    func next() { rocksdb_iter_next(iterator) }
    func previous() { rocksdb_iter_prev(iterator) }

    func seek(_ key: [UInt8]) {
        key.withUnsafeBytes {
            rocksdb_iter_seek(iterator, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count)
        }
    }

    func seekForPrevious(_ key: [UInt8]) {
        key.withUnsafeBytes {
            rocksdb_iter_seek_for_prev(iterator, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count)
        }
    }

    var key: UnsafeRawBufferPointer {
        var length = 0
        let start = rocksdb_iter_key(iterator, &length)
        return UnsafeRawBufferPointer(start: start, count: length)
    }

    var value: UnsafeRawBufferPointer {
        var length = 0
        let start = rocksdb_iter_value(iterator, &length)
        return UnsafeRawBufferPointer(start: start, count: length)
    }

    /// Throws if iteration stopped because of an error rather than the end of the range.
    func checkError() throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_iter_get_error(iterator, &error)
        if let message = RocksDatabase.take(error) {
            throw RocksDatabase.classify("iterate \(family)", message, family: family)
        }
    }
}

/// Polls `hasWork` every 20 ms until it returns false (true) or `timeout` passes (false).
package func waitUntilQuiet(timeout: Duration, _ hasWork: () throws -> Bool) rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while try hasWork() {
        if clock.now >= deadline { return false }
        usleep(20_000)
    }
    return true
}
