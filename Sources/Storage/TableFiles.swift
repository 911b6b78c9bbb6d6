import CRocksDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// RocksDB table files written outside the database and ingested whole: the bulk path a
/// restore takes (no memtable, no write-ahead log; the memory a file takes is its index and
/// filter, bounded by its size).
extension RocksDatabase {
    /// A writer for one table file at `path`, with the database's table options (checksums,
    /// filter, format), so an ingested file is like any other.
    func makeTableFileWriter(path: String) throws -> TableFileWriter {
        try TableFileWriter(path: path, options: options)
    }

    /// Moves the finished table file at `path` into `family` (it gets a sequence number newer
    /// than everything already written) and makes it durable; the file is gone afterwards.
    func ingest(_ family: ColumnFamily, tableFile path: String) throws {
        let ingestOptions = rocksdb_ingestexternalfileoptions_create()
        defer { rocksdb_ingestexternalfileoptions_destroy(ingestOptions) }
        rocksdb_ingestexternalfileoptions_set_move_files(ingestOptions, 1)
        var error: UnsafeMutablePointer<CChar>?
        let name = strdup(path)
        defer { free(name) }
        var list: [UnsafePointer<CChar>?] = [UnsafePointer(name)]
        list.withUnsafeMutableBufferPointer { files in
            rocksdb_ingest_external_file_cf(db, handle(family), files.baseAddress, 1, ingestOptions, &error)
        }
        if let message = Self.take(error) { throw Self.classify("ingest into \(family)", message) }
    }

    /// Compacts [from, to) of `family` down to the last level: after a range delete, this drops
    /// what it covered, so files ingested next land at the bottom instead of piling up in L0.
    func compact(_ family: ColumnFamily, from: [UInt8], to: [UInt8]) {
        from.withUnsafeBytes { start in
            to.withUnsafeBytes { limit in
                rocksdb_compact_range_cf(
                    db, handle(family), start.baseAddress?.assumingMemoryBound(to: CChar.self), start.count,
                    limit.baseAddress?.assumingMemoryBound(to: CChar.self), limit.count)
            }
        }
    }
}

/// One table file being written: keys strictly increasing, then `finish`.
final class TableFileWriter {
    private let writer: OpaquePointer
    private let environment: OpaquePointer
    let path: String
    private(set) var entries = 0
    private(set) var bytesAdded = 0

    fileprivate init(path: String, options: OpaquePointer) throws {
        self.path = path
        environment = rocksdb_envoptions_create()
        writer = rocksdb_sstfilewriter_create(environment, options)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_sstfilewriter_open(writer, path, &error)
        if let message = RocksDatabase.take(error) {
            rocksdb_sstfilewriter_destroy(writer)
            rocksdb_envoptions_destroy(environment)
            throw RocksDatabase.classify("open table file \(path)", message)
        }
    }

    deinit {
        rocksdb_sstfilewriter_destroy(writer)
        rocksdb_envoptions_destroy(environment)
    }

    /// Adds one entry; its key must sort after the previous one's (RocksDB refuses otherwise).
    func put(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_sstfilewriter_put(
            writer, key.baseAddress?.assumingMemoryBound(to: CChar.self), key.count,
            value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count, &error)
        if let message = RocksDatabase.take(error) { throw RocksDatabase.classify("add to table file", message) }
        entries += 1
        bytesAdded += key.count + value.count
    }

    /// Writes the file's index, filter and footer and syncs it.
    func finish() throws {
        precondition(entries > 0, "a table file needs at least one entry")
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_sstfilewriter_finish(writer, &error)
        if let message = RocksDatabase.take(error) { throw RocksDatabase.classify("finish table file", message) }
    }
}
