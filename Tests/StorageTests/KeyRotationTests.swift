import Foundation
import Sealing
import Synchronization
import Testing

@testable import Storage

@Suite struct KeyRotationTests {
    static let layout: [(ColumnFamily, Int)] = [
        (.raftLog, 300), (.raftState, 10), (.stateMachine, 1000), (.metadata, 100),
    ]

    func fill(_ engine: StorageEngine) throws -> [String: [UInt8]] {
        var expected: [String: [UInt8]] = [:]
        for (family, count) in Self.layout {
            var batch = WriteBatch()
            for index in 0..<count {
                let value = randomBytes(64 + index % 200)
                batch.put(family, key: key(index), value: value)
                expected["\(family)/\(index)"] = value
            }
            try engine.write(batch, durability: .buffered)
        }
        return expected
    }

    func expectContents(_ engine: StorageEngine, _ expected: [String: [UInt8]], allUnderKey keyID: UInt32) throws {
        for (family, count) in Self.layout {
            for index in 0..<count {
                #expect(try engine.get(family, key(index)) == expected["\(family)/\(index)"])
                #expect(try engine.dataKeyIDOfStoredValue(family, key(index)) == keyID)
            }
        }
    }

    @Test func rotationInterruptedByReopenResumesAndCompletes() throws {
        let store = try TestStore()
        var expected: [String: [UInt8]]
        let progressBeforeClose: ResealProgress
        let retiredKey: DataKey
        do {
            let engine = try store.open()
            expected = try fill(engine)
            retiredKey = try #require(engine.keyRing.keySet.keys[1])
            #expect(try engine.rotateDataKey() == 2)
            try engine.put(.stateMachine, key(5), bytes("written after rotation"), durability: .buffered)
            expected["\(ColumnFamily.stateMachine)/5"] = bytes("written after rotation")
            #expect(try engine.dataKeyIDOfStoredValue(.stateMachine, key(5)) == 2)
            try engine.resealStep(maxItems: 200)
            try engine.resealStep(maxItems: 200)
            progressBeforeClose = try #require(try engine.resealStep(maxItems: 200))
            #expect(progressBeforeClose.scanned == 310) // raft_log 200 + 100, then raft_state 10
            #expect(!progressBeforeClose.passComplete)
            engine.close()
        }
        let engine = try store.open()
        #expect(engine.keyStatus().activeKeyID == 2)
        #expect(engine.keyStatus().drainingKeyIDs == [1])
        let resumed = try #require(try engine.resealProgress())
        #expect(resumed.scanned == progressBeforeClose.scanned)
        #expect(resumed.family == progressBeforeClose.family)

        var reports: [ResealProgress] = []
        let final = try #require(
            try engine.runReseal(chunk: 128) {
                reports.append($0); return true
            })
        #expect(final.finished)
        #expect(reports.map(\.scanned) == reports.map(\.scanned).sorted())
        #expect(final.scanned == 1410)
        #expect(final.resealed == 1409)
        #expect(
            engine.keyStatus()
                == KeyStatus(
                    activeKeyID: 2, liveKeyIDs: [2], drainingKeyIDs: [], retiredKeyIDs: [1],
                    masterKeyID: store.masterKey.keyID))
        try expectContents(engine, expected, allUnderKey: 2)
        #expect(try engine.rawValue(.keyring, KeyRing.dataKeyRecord(1)) == nil)

        let stale = try key(1).withUnsafeBytes { k in
            try SealedValue.seal(bytes("old"), key: retiredKey, location: engine.location(.metadata, k))
        }
        try engine.writeRaw(.metadata, key(1), stale)
        #expect(sealFailure { try engine.get(.metadata, key(1)) } == .retiredDataKey(1))
    }

    /// A crash image (files copied while the store is open, unsynced chunks included) resumes too.
    @Test func rotationResumesFromACrashImage() throws {
        let store = try TestStore()
        let image = TemporaryDirectory()
        let engine = try store.open()
        let expected = try fill(engine)
        try engine.rotateDataKey()
        try engine.resealStep(maxItems: 500)
        try engine.resealStep(maxItems: 500)
        try FileManager.default.copyItem(atPath: store.dataPath, toPath: image.file("db"))
        engine.close()

        let recovered = try store.open(path: image.file("db"))
        let progress = try #require(try recovered.resealProgress())
        #expect(progress.scanned > 0)
        try recovered.runReseal()
        #expect(recovered.keyStatus().liveKeyIDs == [2])
        for (family, count) in Self.layout {
            for index in 0..<count {
                #expect(try recovered.get(family, key(index)) == expected["\(family)/\(index)"])
                #expect(try recovered.dataKeyIDOfStoredValue(family, key(index)) == 2)
            }
        }
    }

    @Test func retirementWaitsForOlderViews() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.put(.stateMachine, key(1), bytes("before"), durability: .synced)
        let view = try engine.makeView()
        try engine.rotateDataKey()
        try engine.put(.stateMachine, key(1), bytes("after"), durability: .synced)
        let progress = try #require(try engine.runReseal())
        #expect(progress.passComplete)
        #expect(!progress.finished)
        #expect(engine.keyStatus().drainingKeyIDs == [1])
        #expect(try view.get(.stateMachine, key(1)) == bytes("before"))
        #expect(try engine.get(.stateMachine, key(1)) == bytes("after"))
        let newerView = try engine.makeView()
        view.close()
        #expect(engine.keyStatus().drainingKeyIDs == [])
        #expect(engine.keyStatus().retiredKeyIDs == [1])
        #expect(try newerView.get(.stateMachine, key(1)) == bytes("after"))
        #expect(throws: StorageError.self) { try view.get(.stateMachine, key(1)) }
    }

    @Test func concurrentWritesDuringResealAreNeverLost() throws {
        let store = try TestStore()
        let engine = try store.open()
        let count = 3000
        var batch = WriteBatch()
        for index in 0..<count { batch.put(.stateMachine, key: key(index), value: bytes("old \(index)")) }
        try engine.write(batch, durability: .buffered)
        try engine.rotateDataKey()

        let reports = Atomic<Int>(0)
        let background = BackgroundReseal(engine: engine, chunk: 64, pause: .zero) { _ in
            reports.add(1, ordering: .relaxed)
        }
        background.start()
        let writerError = Mutex<(any Error)?>(nil)
        let writer = Thread {
            do {
                for start in stride(from: 0, to: count, by: 10) {
                    var batch = WriteBatch()
                    for index in start..<(start + 10) {
                        batch.put(.stateMachine, key: key(index), value: bytes("new \(index)"))
                    }
                    try engine.write(batch, durability: .buffered)
                }
            } catch {
                writerError.withLock { $0 = error }
            }
        }
        writer.start()
        try background.wait()
        while !writer.isFinished { usleep(1000) }
        #expect(writerError.withLock { $0 } == nil)
        try engine.runReseal()
        #expect(reports.load(ordering: .relaxed) > 0)
        #expect(engine.keyStatus().liveKeyIDs == [2])
        for index in 0..<count {
            #expect(try engine.get(.stateMachine, key(index)) == bytes("new \(index)"))
        }
    }

    @Test func masterKeyRotationRewrapsOnline() throws {
        let store = try TestStore()
        let newMaster = try FileMasterKeyProvider.generateKeyFile(at: store.directory.file("master-2.key"))
        do {
            let engine = try store.open()
            try engine.put(.metadata, key(1), bytes("cluster id"), durability: .synced)
            try engine.rotateDataKey()
            try engine.rotateMasterKey(to: newMaster)
            #expect(engine.keyStatus().masterKeyID == newMaster.keyID)
            #expect(try engine.get(.metadata, key(1)) == bytes("cluster id"))
            try engine.put(.metadata, key(2), bytes("after master rotation"), durability: .synced)
            #expect(try engine.verify().isClean)
            engine.close()
        }
        #expect {
            try store.open()
        } throws: { error in
            guard case StorageError.masterKey(.wrongMasterKey) = error else { return false }
            return true
        }
        let reopened = try store.open(masterKey: newMaster)
        #expect(try reopened.get(.metadata, key(1)) == bytes("cluster id"))
        #expect(try reopened.get(.metadata, key(2)) == bytes("after master rotation"))
        #expect(reopened.keyStatus().drainingKeyIDs == [1])
        try reopened.runReseal()
        #expect(reopened.keyStatus().liveKeyIDs == [2])
    }

    @Test func keyRingStateRoundTripsAndRejectsBrokenInvariants() throws {
        var state = KeyRingState.initial(firstKeyID: 1)
        state.activeKeyID = 2
        state.nextKeyID = 3
        state.liveKeyIDs = [1, 2]
        state.drainingKeyIDs = [1]
        state.reseal = .init(family: .stateMachine, afterKey: key(9), scanned: 10, resealed: 4, unreadable: 0)
        #expect(try KeyRingState.decode(state.encode()) == state)
        #expect(throws: StorageError.self) { try KeyRingState.decode(Array(state.encode().dropLast())) }
        var broken = state
        broken.drainingKeyIDs = [2]
        #expect(throws: StorageError.self) { try broken.checkInvariants() }
        broken = state
        broken.reseal = nil
        #expect(throws: StorageError.self) { try broken.checkInvariants() }
    }
}
