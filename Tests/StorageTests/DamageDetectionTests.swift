import Foundation
import Sealing
import Testing

@testable import Storage

/// Damage made through the raw RocksDB layer (as an attacker or a failing disk would) is detected
/// on read with a typed error, and no bytes are returned.
@Suite struct DamageDetectionTests {
    @Test func alteredValueIsTampered() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.put(.stateMachine, key(1), randomBytes(300), durability: .synced)
        var raw = try #require(try engine.rawValue(.stateMachine, key(1)))
        raw[raw.count / 2] ^= 0x10
        try engine.writeRaw(.stateMachine, key(1), raw)
        #expect(sealFailure { try engine.get(.stateMachine, key(1)) } == .tampered)
    }

    @Test func truncatedValueIsTruncated() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.put(.raftLog, key(1), randomBytes(300), durability: .synced)
        let raw = try #require(try engine.rawValue(.raftLog, key(1)))
        try engine.writeRaw(.raftLog, key(1), Array(raw.dropLast(5)))
        #expect(
            sealFailure { try engine.get(.raftLog, key(1)) }
                == .truncated(expectedBytes: raw.count, actualBytes: raw.count - 5))
        try engine.writeRaw(.raftLog, key(2), Array(raw.prefix(9)))
        #expect(
            sealFailure { try engine.get(.raftLog, key(2)) }
                == .truncated(expectedBytes: SealedValue.overheadByteCount, actualBytes: 9))
    }

    @Test func valueSwappedToAnotherKeyOrFamilyIsMisplaced() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.put(.stateMachine, bytes("contact/alice"), bytes("alice's record"), durability: .synced)
        try engine.put(.stateMachine, bytes("contact/bob"), bytes("bob's record"), durability: .synced)
        let alice = try #require(try engine.rawValue(.stateMachine, bytes("contact/alice")))
        try engine.writeRaw(.stateMachine, bytes("contact/bob"), alice)
        #expect(sealFailure { try engine.get(.stateMachine, bytes("contact/bob")) } == .misplaced)
        try engine.writeRaw(.metadata, bytes("contact/alice"), alice)
        #expect(sealFailure { try engine.get(.metadata, bytes("contact/alice")) } == .misplaced)
        #expect(try engine.get(.stateMachine, bytes("contact/alice")) == bytes("alice's record"))
    }

    @Test func valueSealedByAnotherStoreIsWrongKey() throws {
        let first = try TestStore()
        let second = try TestStore()
        let engine = try first.open()
        let foreign = try second.open()
        try foreign.put(.metadata, key(1), bytes("from elsewhere"), durability: .synced)
        let raw = try #require(try foreign.rawValue(.metadata, key(1)))
        try engine.writeRaw(.metadata, key(1), raw)
        #expect(sealFailure { try engine.get(.metadata, key(1)) } == .wrongDataKey(1))
    }

    @Test func valueUnderUnknownKeyIdIsUnknownKey() throws {
        let store = try TestStore()
        let engine = try store.open()
        let stranger = DataKey(id: 99, key: try SymmetricKey.generate())
        let sealed = try key(5).withUnsafeBytes { k in
            try SealedValue.seal(bytes("planted"), key: stranger, location: engine.location(.metadata, k))
        }
        try engine.writeRaw(.metadata, key(5), sealed)
        #expect(sealFailure { try engine.get(.metadata, key(5)) } == .unknownDataKey(99))
    }

    @Test func wrongMasterKeyIsRefusedAtOpen() throws {
        let store = try TestStore()
        try store.open().close()
        let other = try FileMasterKeyProvider.generateKeyFile(at: store.directory.file("other.key"))
        #expect {
            try store.open(masterKey: other)
        } throws: { error in
            guard case StorageError.masterKey(.wrongMasterKey(let expected, let actual)) = error else { return false }
            return expected == store.masterKey.keyID && actual == other.keyID
        }
    }

    @Test func scanStopsAtDamageInsteadOfReturningIt() throws {
        let store = try TestStore()
        let engine = try store.open()
        for index in 0..<10 { try engine.put(.stateMachine, key(index), bytes("v\(index)"), durability: .buffered) }
        var raw = try #require(try engine.rawValue(.stateMachine, key(4)))
        raw[SealedValue.headerByteCount] ^= 1
        try engine.writeRaw(.stateMachine, key(4), raw)
        #expect(sealFailure { try engine.scan(.stateMachine, KeyRange(), limit: 100) } == .tampered)
        #expect(try engine.scan(.stateMachine, KeyRange(), limit: 4).entries.count == 4)
    }

    /// Bytes flipped inside SST files on disk (and a value altered through RocksDB) are all listed
    /// by `verify`, each with its column family and key; the scan goes on past each one.
    @Test func verifyReportsEveryCorruptedItem() throws {
        let store = try TestStore()
        let victims: [(ColumnFamily, Int)] = [(.stateMachine, 50), (.metadata, 120)]
        var victimCiphertexts: [[UInt8]] = []
        do {
            let engine = try store.open()
            for family in ColumnFamily.dataFamilies {
                var batch = WriteBatch()
                for index in 0..<200 { batch.put(family, key: key(index), value: randomBytes(300)) }
                try engine.write(batch, durability: .buffered)
            }
            var raw = try #require(try engine.rawValue(.raftLog, key(7)))
            raw[raw.count - 20] ^= 0x01
            try engine.writeRaw(.raftLog, key(7), raw)
            for (family, index) in victims {
                let stored = try #require(try engine.rawValue(family, key(index)))
                victimCiphertexts.append(Array(stored[100..<140]))
            }
            #expect(try engine.verify().problems.map(\.key) == [key(7)])
            try engine.flush()
            engine.close()
        }
        var flipped = 0
        for file in try store.dataFiles() where file.hasSuffix(".sst") {
            var contents = try #require(FileManager.default.contents(atPath: file).map { [UInt8]($0) })
            var changed = false
            for ciphertext in victimCiphertexts {
                if let range = contents.range(of: ciphertext) {
                    contents[range.lowerBound + 10] ^= 0xFF
                    changed = true
                    flipped += 1
                }
            }
            if changed { try Data(contents).write(to: URL(fileURLWithPath: file)) }
        }
        #expect(flipped == victims.count)

        let engine = try store.open()
        let report = try engine.verify()
        #expect(!report.isClean)
        let unreadable = report.problems.filter { if case .unreadable = $0.kind { true } else { false } }
        let unreadablePlaces = Set(unreadable.map { "\($0.family)/\($0.key!.hexString)" })
        let expected = Set(([(.raftLog, 7)] + victims).map { "\($0.0)/\(key($0.1).hexString)" })
        #expect(unreadablePlaces == expected)
        let corruptFamilies = Set(
            report.problems.compactMap { if case .storageCorruption = $0.kind { $0.family } else { nil } })
        #expect(corruptFamilies == [.stateMachine, .metadata])
        for family in ColumnFamily.dataFamilies { #expect(report.checkedByFamily[family] == 200) }
        #expect(report.checkedByFamily[.keyring] == 3)

        for (family, index) in victims {
            #expect(throws: StorageError.self) { try engine.get(family, key(index)) }
        }
        #expect(try engine.get(.stateMachine, key(199)) != nil)
    }

    @Test func verifyOfHealthyStoreIsClean() throws {
        let store = try TestStore()
        let engine = try store.open()
        for index in 0..<50 { try engine.put(.raftState, key(index), randomBytes(64), durability: .buffered) }
        var seen: [ColumnFamily: UInt64] = [:]
        let report = try engine.verify { family, count in seen[family] = count }
        #expect(report.isClean)
        #expect(report.checked == 53)
        #expect(seen[.raftState] == 50)
    }
}
