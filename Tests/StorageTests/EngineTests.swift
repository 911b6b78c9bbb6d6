import Foundation
import Sealing
import Testing

@testable import Storage

@Suite struct EngineTests {
    @Test func valuesRoundTripInEveryFamilyIncludingEmptyAndLarge() throws {
        let store = try TestStore()
        let large = Array(String(repeating: "Ada Lovelace; ada@example.com; +44 20 7946 0000\n", count: 100_000).utf8)
        let values: [[UInt8]] = [[], bytes("x"), randomBytes(256), randomBytes(4 << 20 | 3), large]
        do {
            let engine = try store.open()
            for family in ColumnFamily.dataFamilies {
                for (index, value) in values.enumerated() {
                    try engine.put(family, key(index), value, durability: .buffered)
                }
            }
            for family in ColumnFamily.dataFamilies {
                for (index, value) in values.enumerated() { #expect(try engine.get(family, key(index)) == value) }
            }
            engine.close()
        }
        let reopened = try store.open()
        for family in ColumnFamily.dataFamilies {
            for (index, value) in values.enumerated() { #expect(try reopened.get(family, key(index)) == value) }
            #expect(try reopened.get(family, key(99)) == nil)
        }
    }

    @Test func compactionMergesLevelZeroFilesAndKeepsEveryValue() throws {
        let store = try TestStore()
        let engine = try store.open()
        let values = (0..<200).map { _ in randomBytes(300) }
        for round in 0..<2 {
            for index in stride(from: round, to: values.count, by: 2) {
                try engine.put(.stateMachine, key(index), values[index], durability: .buffered)
            }
            try engine.flush()
        }
        #expect(engine.database.integerProperty("rocksdb.num-files-at-level0", family: .stateMachine) == 2)
        try engine.compact()
        #expect(engine.database.integerProperty("rocksdb.num-files-at-level0", family: .stateMachine) == 0)
        for (index, value) in values.enumerated() { #expect(try engine.get(.stateMachine, key(index)) == value) }
        #expect(try engine.verify().isClean)
        engine.close()
        #expect {
            try engine.compact()
        } throws: { error in
            if case StorageError.closed = error { return true }
            return false
        }
    }

    @Test func deletesAndRangeDeletesRemoveExactlyTheirKeys() throws {
        let store = try TestStore()
        let engine = try store.open()
        for index in 0..<20 { try engine.put(.raftLog, key(index), bytes("entry \(index)"), durability: .buffered) }
        try engine.delete(.raftLog, key(3), durability: .synced)
        var batch = WriteBatch()
        batch.deleteRange(.raftLog, from: key(10), to: key(15))
        try engine.write(batch, durability: .synced)
        let remaining = try engine.scan(.raftLog, KeyRange(), limit: 100).entries.map(\.key)
        let expected = (0..<20).filter { $0 != 3 && !(10..<15).contains($0) }.map(key)
        #expect(remaining == expected)
    }

    @Test func scansHonourBoundsLimitsDirectionAndResume() throws {
        let store = try TestStore()
        let engine = try store.open()
        var batch = WriteBatch()
        for index in 0..<100 { batch.put(.stateMachine, key: key(index), value: bytes("v\(index)")) }
        try engine.write(batch, durability: .buffered)

        let bounded = try engine.scan(.stateMachine, KeyRange(from: key(10), to: key(20)), limit: 100)
        #expect(bounded.entries.map(\.key) == (10..<20).map(key))
        #expect(bounded.entries.map(\.value) == (10..<20).map { bytes("v\($0)") })
        #expect(bounded.resume == nil)

        var collected: [[UInt8]] = []
        var range: KeyRange? = KeyRange(from: key(10), to: key(20))
        var pages = 0
        while let next = range {
            let page = try engine.scan(.stateMachine, next, limit: 3)
            #expect(page.entries.count <= 3)
            collected += page.entries.map(\.key)
            range = page.resume
            pages += 1
        }
        #expect(collected == (10..<20).map(key))
        #expect(pages == 4)

        var reversed: [[UInt8]] = []
        range = KeyRange(from: key(10), to: key(20))
        while let next = range {
            let page = try engine.scan(.stateMachine, next, limit: 4, direction: .reverse)
            reversed += page.entries.map(\.key)
            range = page.resume
        }
        #expect(reversed == (10..<20).reversed().map(key))

        let last = try engine.scan(.stateMachine, KeyRange(), limit: 1, direction: .reverse)
        #expect(last.entries.first?.key == key(99))
        let prefix = try engine.scan(.stateMachine, .prefix(Array(key(42).prefix(7))), limit: 1000)
        #expect(prefix.entries.map(\.key) == (0..<100).map(key))
    }

    @Test func badInputIsRefusedAndWritesNothing() throws {
        let store = try TestStore()
        let engine = try store.open()
        func refused(_ body: () throws -> Void) {
            #expect {
                try body()
            } throws: { error in
                guard case StorageError.invalidArgument = error else { return false }
                return true
            }
        }
        refused { try engine.put(.keyring, bytes("state"), bytes("x"), durability: .synced) }
        refused { _ = try engine.get(.keyring, bytes("state")) }
        refused { _ = try engine.scan(.keyring, KeyRange(), limit: 1) }
        refused { try engine.put(.metadata, [], bytes("x"), durability: .synced) }
        refused {
            try engine.put(
                .metadata, [UInt8](repeating: 1, count: StorageLimits.maxKeyBytes + 1), [], durability: .synced)
        }
        refused { _ = try engine.scan(.metadata, KeyRange(), limit: 0) }
        refused { _ = try engine.scan(.metadata, KeyRange(), limit: StorageLimits.maxScanEntries + 1) }
        refused { _ = try engine.scan(.metadata, KeyRange(from: key(5), to: key(5)), limit: 1) }

        var batch = WriteBatch()
        batch.put(.metadata, key: key(1), value: bytes("fine"))
        batch.put(.stateMachine, key: key(2), value: [UInt8](repeating: 0, count: StorageLimits.maxValueBytes + 1))
        refused { try engine.write(batch, durability: .synced) }
        #expect(try engine.get(.metadata, key(1)) == nil)

        var backwards = WriteBatch()
        backwards.deleteRange(.raftLog, from: key(9), to: key(2))
        refused { try engine.write(backwards, durability: .synced) }
    }

    @Test func settleLeavesNoBackgroundWorkAndKeepsData() throws {
        let store = try TestStore()
        let engine = try store.open()
        for round in 0..<4 {
            var batch = WriteBatch()
            for index in 0..<2000 { batch.put(.stateMachine, key: key(round * 2000 + index), value: randomBytes(500)) }
            try engine.write(batch, durability: .buffered)
        }
        #expect(try engine.settle(timeout: .seconds(60)))
        #expect(!engine.database.hasBackgroundWork)
        #expect(try store.dataFiles().contains { $0.hasSuffix(".sst") })
        #expect(try engine.scan(.stateMachine, KeyRange(), limit: 10_000).entries.count == 8000)
    }

    @Test func closedEngineRefusesCalls() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.put(.metadata, key(1), bytes("x"), durability: .synced)
        engine.close()
        engine.close()
        #expect(throws: StorageError.self) { try engine.get(.metadata, key(1)) }
        #expect(throws: StorageError.self) { try engine.put(.metadata, key(1), bytes("y"), durability: .synced) }
    }

    @Test func directoryWithDataButNoKeyRingIsRefused() throws {
        let store = try TestStore()
        do {
            let database = try RocksDatabase(path: store.dataPath, options: .compact)
            let batch = RocksBatch(database: database)
            batch.put(.stateMachine, key: key(1), value: bytes("planted"))
            try database.write(batch, durability: .synced)
            database.close()
        }
        #expect {
            try store.open()
        } throws: { error in
            guard case StorageError.keyRingMissing = error else { return false }
            return true
        }
    }

    @Test func lookupTokensAreStableKeyedAndSeparatedByPurpose() throws {
        let store = try TestStore()
        let email = bytes("grace.hopper@example.com")
        let token: [UInt8]
        do {
            let engine = try store.open()
            token = engine.lookupToken(purpose: "email", value: email)
            #expect(token.count == 32)
            #expect(engine.lookupToken(purpose: "email", value: email) == token)
            #expect(engine.lookupToken(purpose: "phone", value: email) != token)
            #expect(engine.lookupToken(purpose: "email", value: bytes("grace.hopper@example.org")) != token)
            #expect(!token.contains(subsequence: Array(email.prefix(6))))
            engine.close()
        }
        #expect(try store.open().lookupToken(purpose: "email", value: email) == token)
        let other = try TestStore()
        #expect(try other.open().lookupToken(purpose: "email", value: email) != token)
    }
}
