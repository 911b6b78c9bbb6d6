import Testing

@testable import Storage

/// The in-memory store the simulator runs the state machine on behaves as the engine does:
/// the same random batches give the same reads, scan pages (forward and reverse, with their
/// resume ranges) and views; and a power loss keeps exactly what was synced.
@Suite struct MemoryStateStorageTests {
    @Test func theSameBatchesGiveTheSameReadsScansAndViewsAsTheEngine() throws {
        let store = try TestStore()
        let engine = try store.open()
        defer { engine.close() }
        let memory = MemoryStateStorage()
        let stores: [any StateStorage] = [engine, memory]
        var random = SystemRandomNumberGenerator()
        var earlierViews: [[any StateStorageView]] = []
        for round in 0..<40 {
            var batch = WriteBatch()
            for _ in 0..<Int.random(in: 1...20, using: &random) {
                let index = Int.random(in: 0..<64, using: &random)
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<6:
                    batch.put(
                        .stateMachine, key: key(index), value: randomBytes(Int.random(in: 0...40, using: &random)))
                case 6..<9: batch.delete(.stateMachine, key: key(index))
                default:
                    batch.deleteRange(
                        .stateMachine, from: key(index), to: key(index + Int.random(in: 1...8, using: &random)))
                }
            }
            for target in stores { try target.write(batch, durability: .buffered) }
            if round % 10 == 0 { earlierViews.append(try stores.map { try $0.makeStateView() }) }
            for index in 0..<64 {
                #expect(try engine.get(.stateMachine, key(index)) == memory.get(.stateMachine, key(index)))
            }
            for direction in [ScanDirection.forward, .reverse] {
                let range = KeyRange(
                    from: key(Int.random(in: 0..<32, using: &random)), to: key(Int.random(in: 32...70, using: &random)))
                let limit = Int.random(in: 1...10, using: &random)
                let (fromEngine, fromMemory) = (
                    try engine.scan(.stateMachine, range, limit: limit, direction: direction),
                    try memory.scan(.stateMachine, range, limit: limit, direction: direction)
                )
                #expect(fromEngine.entries == fromMemory.entries)
                #expect(fromEngine.resume == fromMemory.resume)
            }
        }
        // Views still show the state they were made at.
        for views in earlierViews {
            let pages = try views.map { try $0.scan(.stateMachine, KeyRange(), limit: 1000) }
            #expect(pages[0].entries == pages[1].entries)
            for view in views { view.close() }
        }
        #expect(throws: StorageError.self) {
            try memory.scan(.stateMachine, KeyRange(from: key(2), to: key(1)), limit: 10)
        }
        #expect(throws: StorageError.self) { try memory.get(.keyring, key(1)) }
    }

    @Test func aPowerLossKeepsWhatWasSyncedAndLosesTheRest() throws {
        let memory = MemoryStateStorage()
        var batch = WriteBatch()
        batch.put(.stateMachine, key: key(1), value: [1])
        try memory.write(batch, durability: .synced)
        batch = WriteBatch()
        batch.put(.stateMachine, key: key(2), value: [2])
        batch.delete(.stateMachine, key: key(1))
        try memory.write(batch, durability: .buffered)
        #expect(try memory.get(.stateMachine, key(1)) == nil && memory.get(.stateMachine, key(2)) == [2])
        memory.losePowerNow()
        #expect(try memory.get(.stateMachine, key(1)) == [1])
        #expect(try memory.get(.stateMachine, key(2)) == nil)
    }
}
