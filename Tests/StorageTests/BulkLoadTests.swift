import Foundation
import Testing

@testable import Storage

/// The engine's bulk load (table files ingested whole), on real RocksDB.
@Suite struct BulkLoadTests {
    private func key(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Records replace what the ranges held (and only that), come back sealed like any write,
    /// and are still there after a reopen; files are cut at the size asked for.
    @Test func aBulkLoadReplacesItsRangesDurably() throws {
        let store = try TestStore()
        var engine: StorageEngine? = try store.open()
        var before = WriteBatch()
        before.put(.stateMachine, key: key("a/old"), value: key("gone"))
        before.put(.stateMachine, key: key("a/kept-by-overwrite"), value: key("old"))
        before.put(.stateMachine, key: key("b/untouched"), value: key("stays"))
        before.put(.metadata, key: key("a/other-family"), value: key("stays"))
        try engine!.write(before, durability: .synced)

        var records = (0..<200).map { (key: key("a/\(String(format: "%04d", $0))"), value: randomBytes(1000)) }
        records.append((key: key("a/kept-by-overwrite"), value: key("new")))
        records.sort { $0.key.lexicographicallyPrecedes($1.key) }
        records.append((key: key("c/1"), value: key("third range")))
        var pending = records[...]
        let loaded = try engine!.replace(
            .stateMachine, ranges: [.prefix(key("a/")), .prefix(key("c/"))], fileBytes: 50_000
        ) { pending.popFirst() }
        #expect(loaded.records == 202)
        #expect(loaded.files >= 4, "about 200 kB in files of 50 kB")

        engine!.close()
        engine = try store.open()
        #expect(try engine!.get(.stateMachine, key("a/old")) == nil)
        #expect(try engine!.get(.stateMachine, key("a/kept-by-overwrite")) == key("new"))
        #expect(try engine!.get(.stateMachine, key("b/untouched")) == key("stays"))
        #expect(try engine!.get(.metadata, key("a/other-family")) == key("stays"))
        #expect(try engine!.get(.stateMachine, key("c/1")) == key("third range"))
        for record in records { #expect(try engine!.get(.stateMachine, record.key) == record.value) }
        // No plaintext in any file: bulk-loaded values are sealed like written ones. Closed
        // first, so that no background compaction removes a file between listing and reading.
        engine!.close()
        for file in try store.dataFiles() {
            let contents = try Data(contentsOf: URL(fileURLWithPath: file))
            #expect(contents.range(of: Data("third range".utf8)) == nil, "\(file)")
        }
        #expect(!FileManager.default.fileExists(atPath: store.dataPath + "/bulk-load"))
    }

    /// A record that does not sort after the previous one starts a new file, ingested over
    /// the earlier ones: the later record wins, as in a write.
    @Test func recordsOutOfOrderStartANewFileAndTheLaterWins() throws {
        let store = try TestStore()
        let engine = try store.open()
        var pending = [
            (key: key("a/2"), value: key("first")), (key: key("a/3"), value: key("x")),
            (key: key("a/2"), value: key("second")), (key: key("a/1"), value: key("y")),
        ][...]
        let loaded = try engine.replace(.stateMachine, ranges: [.prefix(key("a/"))], fileBytes: 1 << 20) {
            pending.popFirst()
        }
        #expect(loaded == (records: 4, files: 3))
        #expect(try engine.get(.stateMachine, key("a/2")) == key("second"))
        #expect(try engine.get(.stateMachine, key("a/1")) == key("y"))
        #expect(try engine.get(.stateMachine, key("a/3")) == key("x"))
    }

    @Test func aRecordOutsideItsRangesAnUnboundedRangeOrTheKeyRingIsRefused() throws {
        let store = try TestStore()
        let engine = try store.open()
        var outside = [(key: key("a/1"), value: key("v")), (key: key("b/1"), value: key("v"))][...]
        #expect(throws: StorageError.self) {
            _ = try engine.replace(.stateMachine, ranges: [.prefix(key("a/"))]) { outside.popFirst() }
        }
        #expect(try engine.get(.stateMachine, key("b/1")) == nil)
        var unbounded = [(key: key("a/1"), value: key("v"))][...]
        #expect(throws: StorageError.self) {
            _ = try engine.replace(.stateMachine, ranges: [KeyRange(from: key("a/"))]) { unbounded.popFirst() }
        }
        var keyring = [(key: key("a/1"), value: key("v"))][...]
        #expect(throws: StorageError.self) {
            _ = try engine.replace(.keyring, ranges: [.prefix(key("a/"))]) { keyring.popFirst() }
        }
    }
}
