import Foundation
import Logging
import Raft
import Sealing

@testable import RaftStorage
@testable import Storage

/// A member's store on real RocksDB in a temporary directory, removed at the end.
final class TestDisk: @unchecked Sendable {
    let path = NSTemporaryDirectory() + "crm-raftlog-" + UUID().uuidString
    let masterKey: FileMasterKeyProvider
    private(set) var engine: StorageEngine?

    init() throws {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        masterKey = try FileMasterKeyProvider.generateKeyFile(at: path + "/master.key")
    }

    deinit {
        engine?.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Opens the engine (closing any open one first, as a restart would) and the log on it.
    func openLog(cacheBytes: Int = DurableLogStore.defaultCacheBytes) throws -> DurableLogStore {
        engine?.close()
        var logger = Logger(label: "test.raftlog")
        logger.logLevel = .critical
        let opened = try StorageEngine.open(path: path + "/db", masterKey: masterKey, options: .compact, logger: logger)
        engine = opened
        return try DurableLogStore.open(engine: opened, cacheBytes: cacheBytes, logger: logger)
    }

    /// The stored bytes of one value, as the disk holds them (sealed).
    func rawValue(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try key.withUnsafeBytes { k in try engine!.database.withValue(family, k) { $0.map { Array($0) } } }
    }

    /// Writes bytes without sealing them (a failing disk, an attacker).
    func writeRaw(_ family: ColumnFamily, _ key: [UInt8], _ bytes: [UInt8]) throws {
        let batch = RocksBatch(database: engine!.database)
        batch.put(family, key: key, value: bytes)
        try engine!.database.write(batch, durability: .synced)
    }

    func rawEntry(_ index: UInt64) throws -> [UInt8]? { try rawValue(.raftLog, LogKeys.entry(index)) }
    func writeRawEntry(_ index: UInt64, _ bytes: [UInt8]) throws { try writeRaw(.raftLog, LogKeys.entry(index), bytes) }

    func deleteRawEntry(_ index: UInt64) throws {
        var batch = WriteBatch()
        batch.delete(.raftLog, key: LogKeys.entry(index))
        try engine!.write(batch, durability: .synced)
    }

    /// Flips one byte in the middle of an entry's stored value.
    func damageEntry(_ index: UInt64) throws {
        var raw = try rawEntry(index)!
        raw[raw.count / 2] ^= 0x40
        try writeRawEntry(index, raw)
    }
}

func entry(_ index: UInt64, term: UInt64, _ text: String = "") -> Entry {
    Entry(term: term, index: index, data: Array((text.isEmpty ? "entry \(index)" : text).utf8))
}

func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
    range.map { entry($0, term: term) }
}
