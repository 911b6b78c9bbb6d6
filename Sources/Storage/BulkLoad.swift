import Foundation
import Sealing

/// One record of a bulk load: a key and its plaintext value.
public typealias BulkRecord = (key: [UInt8], value: [UInt8])

extension StorageEngine {
    /// Table files of a bulk load are cut at this size: it bounds a file's index and filter in
    /// memory, and the extra disk the load needs beyond the data itself.
    static let bulkLoadFileBytes = 64 << 20

    /// Replaces everything in `ranges` of `family` with the records `next` yields until nil
    /// (each inside one of the ranges), durable when this returns. Returns how many it loaded.
    ///
    /// The ranges are deleted and compacted away first; then the records are sealed into table
    /// files beside the database and each file is ingested whole. No memtable or write-ahead
    /// log sees them, so the memory this takes is one file's index and filter, whatever the
    /// number of records. Records should come in ascending key order; a record that does not
    /// sort after the one before starts a new file, which is ingested after (and so over) the
    /// previous one. A failure midway leaves part of the records in place: the caller keeps
    /// its own marker of a complete load (the state machine's position) and loads again.
    public func replace(
        _ family: ColumnFamily, ranges: [KeyRange], with next: () throws -> BulkRecord?
    ) throws -> Int {
        try replace(family, ranges: ranges, fileBytes: Self.bulkLoadFileBytes, with: next).records
    }

    /// `replace` with the file size chosen; also returns how many table files it ingested.
    func replace(
        _ family: ColumnFamily, ranges: [KeyRange], fileBytes: Int, with next: () throws -> BulkRecord?
    ) throws -> (records: Int, files: Int) {
        precondition(fileBytes > 0, "a table file holds at least one record")
        try write(try WriteBatch.clearing(family, ranges), durability: .synced)
        try whileOpen {
            for range in ranges { database.compact(family, from: range.lower, to: range.upper!) }
        }
        let directory = path + "/bulk-load"
        try? FileManager.default.removeItem(atPath: directory) // files of an interrupted load
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        var loader = BulkLoader(ranges: ranges)
        var pending = try next()
        var files = 0
        while pending != nil {
            // The gate is shared for one file, from its first seal to its ingestion: no key
            // switch can retire the key that sealed it before the re-seal pass can see it.
            try whileOpen {
                files += 1
                let writer = try database.makeTableFileWriter(path: directory + "/\(files).sst")
                let key = keyRing.keySet.active
                var previous: [UInt8]? = nil
                while let record = pending {
                    if let previous, !previous.lexicographicallyPrecedes(record.key) { break }
                    if writer.bytesAdded >= fileBytes { break }
                    try loader.check(record, family: family)
                    try loader.withSealed(record, family: family, engine: self, key: key) { sealedKey, sealed in
                        try writer.put(key: sealedKey, value: sealed)
                    }
                    previous = record.key
                    pending = try next()
                }
                try writer.finish()
                try database.ingest(family, tableFile: writer.path)
            }
        }
        assert(loader.records == 0 || files > 0, "records were loaded without a file")
        return (loader.records, files)
    }
}

/// The per-record half of a bulk load: checks each record and seals it into one reused buffer.
struct BulkLoader {
    let ranges: [KeyRange]
    private(set) var records = 0
    private var scratch: [UInt8] = []

    init(ranges: [KeyRange]) { self.ranges = ranges }

    func check(_ record: BulkRecord, family: ColumnFamily) throws {
        try validateKey(record.key, family)
        guard record.value.count <= StorageLimits.maxValueBytes else {
            throw StorageError.invalidArgument(
                "value of \(record.value.count) bytes for \(family) exceeds the limit of \(StorageLimits.maxValueBytes)"
            )
        }
        try Self.checkInside(ranges, record.key, family)
    }

    /// A bulk-loaded key must fall in one of the ranges the load replaces.
    static func checkInside(_ ranges: [KeyRange], _ key: [UInt8], _ family: ColumnFamily) throws {
        guard ranges.contains(where: { $0.contains(key) }) else {
            throw StorageError.invalidArgument("a bulk-loaded key in \(family) is outside its ranges")
        }
    }

    mutating func withSealed(
        _ record: BulkRecord, family: ColumnFamily, engine: StorageEngine, key: DataKey,
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let capacity = SealedValue.sealedCapacity(forPlaintext: record.value.count)
        if scratch.count < capacity { scratch = [UInt8](repeating: 0, count: capacity) }
        try scratch.withUnsafeMutableBytes { buffer in
            let count = try engine.sealValue(record.value, family: family, key: record.key, with: key, into: buffer)
            try record.key.withUnsafeBytes { keyBytes in
                try body(keyBytes, UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
        }
        records += 1
    }
}

extension WriteBatch {
    /// Range deletes of every range a bulk load replaces (which must be bounded).
    static func clearing(_ family: ColumnFamily, _ ranges: [KeyRange]) throws -> WriteBatch {
        var batch = WriteBatch()
        for range in ranges {
            guard let upper = range.upper else {
                throw StorageError.invalidArgument("a bulk load replaces bounded ranges")
            }
            batch.deleteRange(family, from: range.lower, to: upper)
        }
        return batch
    }
}
