import Foundation
import Logging
import Sealing
import Storage
import Testing

@testable import Node

/// The store's data-format marker: a new store is marked with this binary's format; a store a
/// newer binary marked is refused at open, naming both formats, and left as it was.
@Suite struct DataFormatTests {
    @Test func aStoreOfANewerFormatIsRefused() throws {
        let directory = NSTemporaryDirectory() + "crm-format-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = try FileMasterKeyProvider.generateKeyFile(at: directory + "/master.key")
        let storage = try StorageEngine.open(path: directory + "/db", masterKey: key)
        defer { storage.close() }
        #expect(try DataFormat.check(storage) == 0, "a new store has no marker")
        #expect(try DataFormat.check(storage) == DataFormat.current, "now it is marked")

        var newer = WriteBatch()
        newer.put(.metadata, key: DataFormat.key, value: [0, 0, 0, UInt8(DataFormat.current + 1)])
        try storage.write(newer, durability: .synced)
        do {
            try DataFormat.check(storage)
            Issue.record("a store of a newer format opened")
        } catch let refusal as DataFormat.Refusal {
            #expect(refusal.description.contains("data format \(DataFormat.current + 1) by a newer crm-node"))
            #expect(refusal.description.contains("reads formats up to \(DataFormat.current)"))
        }
        #expect(
            try storage.get(.metadata, DataFormat.key) == [0, 0, 0, UInt8(DataFormat.current + 1)], "left as it was")
    }
}
