import Foundation
import Sealing
import Testing

@testable import Storage

/// Crash images: the files of a live store copied while it is open (what a process crash leaves
/// behind), then with the WAL cut short at many points (a torn tail).
@Suite struct AtomicityTests {
    static let batches = 40

    @Test func batchAcrossFamiliesIsAllOrNothingAfterReopen() throws {
        let store = try TestStore()
        let image = TemporaryDirectory()
        do {
            let engine = try store.open()
            for batchIndex in 0..<Self.batches {
                var batch = WriteBatch()
                for family in ColumnFamily.dataFamilies {
                    batch.put(family, key: key(batchIndex), value: randomBytes(700))
                }
                try engine.write(batch, durability: .buffered)
            }
            try FileManager.default.copyItem(atPath: store.dataPath, toPath: image.file("db"))
            engine.close()
        }
        let wal = try #require(
            try FileManager.default.contentsOfDirectory(atPath: image.file("db")).first { $0.hasSuffix(".log") })
        let walBytes = try #require(FileManager.default.contents(atPath: image.file("db/" + wal)))

        var survivorsByCut: [Int] = []
        let cuts = [
            walBytes.count, walBytes.count - 1, walBytes.count - 200, walBytes.count * 3 / 4,
            walBytes.count / 2, walBytes.count / 3,
        ]
        for cut in cuts {
            let copy = TemporaryDirectory()
            try FileManager.default.copyItem(atPath: image.file("db"), toPath: copy.file("db"))
            try walBytes.prefix(cut).write(to: URL(fileURLWithPath: copy.file("db/" + wal)))
            let engine = try store.open(path: copy.file("db"))
            var survivors = 0
            for batchIndex in 0..<Self.batches {
                let present = try ColumnFamily.dataFamilies.filter { try engine.get($0, key(batchIndex)) != nil }.count
                #expect(
                    present == 0 || present == ColumnFamily.dataFamilies.count,
                    "batch \(batchIndex) is partly present (\(present) of 4 families) after a cut at \(cut)")
                if present > 0 {
                    #expect(survivors == batchIndex, "batch \(batchIndex) survived after a lost earlier batch")
                    survivors += 1
                }
            }
            survivorsByCut.append(survivors)
            engine.close()
        }
        #expect(survivorsByCut[0] == Self.batches)
        #expect(survivorsByCut[1] == Self.batches - 1)
        #expect(survivorsByCut == survivorsByCut.sorted(by: >))
        #expect(survivorsByCut.last! < Self.batches / 2)
    }

    /// Bytes flipped in the middle of the WAL (damage, not a torn tail): the store refuses to
    /// open rather than replay up to the damage and forget the synced writes after it.
    @Test func aWALDamagedBeforeItsEndRefusesToOpen() throws {
        let store = try TestStore()
        let image = TemporaryDirectory()
        do {
            let engine = try store.open()
            for batchIndex in 0..<Self.batches {
                var batch = WriteBatch()
                batch.put(.stateMachine, key: key(batchIndex), value: randomBytes(700))
                try engine.write(batch, durability: .synced)
            }
            try FileManager.default.copyItem(atPath: store.dataPath, toPath: image.file("db"))
            engine.close()
        }
        let wal = try #require(
            try FileManager.default.contentsOfDirectory(atPath: image.file("db")).first { $0.hasSuffix(".log") })
        var walBytes = try #require(FileManager.default.contents(atPath: image.file("db/" + wal)))
        let middle = walBytes.count / 2
        for index in middle..<middle + 32 { walBytes[index] ^= 0xFF }
        try walBytes.write(to: URL(fileURLWithPath: image.file("db/" + wal)))
        #expect(throws: StorageError.self) { try store.open(path: image.file("db")) }
    }
}
