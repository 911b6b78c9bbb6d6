import Foundation
import Logging
import Sealing

@testable import Storage

/// A fresh directory under the system temp dir, removed when the test ends.
final class TemporaryDirectory: @unchecked Sendable {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "crm-storage-" + UUID().uuidString
        try! FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A store on real RocksDB in a temporary directory, with its own master key file.
final class TestStore: @unchecked Sendable {
    let directory = TemporaryDirectory()
    let masterKey: FileMasterKeyProvider
    var dataPath: String { directory.file("db") }

    init() throws {
        masterKey = try FileMasterKeyProvider.generateKeyFile(at: directory.file("master.key"))
    }

    /// Opens the store (or a copy of it at `path`) with quiet logging.
    func open(masterKey: (any MasterKeyProvider)? = nil, path: String? = nil) throws -> StorageEngine {
        var logger = Logger(label: "test.storage")
        logger.logLevel = .critical
        return try StorageEngine.open(
            path: path ?? dataPath, masterKey: masterKey ?? self.masterKey,
            options: .compact, logger: logger)
    }

    /// Every regular file under the store's data directory.
    func dataFiles() throws -> [String] {
        let enumerator = FileManager.default.enumerator(atPath: dataPath)
        var files: [String] = []
        while let name = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = dataPath + "/" + name
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(path)
            }
        }
        return files
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

func key(_ index: Int) -> [UInt8] { KeyEncoding.bigEndian(UInt64(index)) }

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

extension StorageEngine {
    /// The stored (sealed) bytes, bypassing verification: for tests that damage data on purpose.
    func rawValue(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try key.withUnsafeBytes { k in try database.withValue(family, k) { $0.map { Array($0) } } }
    }

    /// Stores bytes without sealing them: simulates damage or an attacker with disk access.
    func writeRaw(_ family: ColumnFamily, _ key: [UInt8], _ value: [UInt8]) throws {
        let batch = RocksBatch(database: database)
        batch.put(family, key: key, value: value)
        try database.write(batch, durability: .synced)
    }

    func dataKeyIDOfStoredValue(_ family: ColumnFamily, _ key: [UInt8]) throws -> UInt32? {
        guard let raw = try rawValue(family, key) else { return nil }
        return try raw.withUnsafeBytes { try SealedValue.header(of: $0) }.keyID
    }
}

/// The failure behind a storage error, for precise expectations.
func sealFailure(of body: () throws -> Any?) -> SealFailure? {
    do {
        _ = try body()
        return nil
    } catch StorageError.unreadable(_, _, let reason) {
        return reason
    } catch {
        return nil
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool { range(of: needle) != nil }

    func range(of needle: [UInt8]) -> Range<Int>? {
        guard let first = needle.first, needle.count <= count else { return nil }
        return withUnsafeBufferPointer { haystack in
            needle.withUnsafeBufferPointer { pattern in
                var start = 0
                let lastStart = haystack.count - pattern.count
                while start <= lastStart {
                    if haystack[start] == first,
                        memcmp(haystack.baseAddress! + start, pattern.baseAddress!, pattern.count) == 0
                    {
                        return start..<(start + pattern.count)
                    }
                    start += 1
                }
                return nil
            }
        }
    }
}
