import Foundation
import KVStore
import Raft
import Sealing
import Storage

/// A key-encryption key in a temporary file, as `crm.key_file` would hold it.
public final class TestKEK: @unchecked Sendable {
    public let directory = NSTemporaryDirectory() + "crm-kek-" + UUID().uuidString
    public let provider: FileMasterKeyProvider

    public init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        provider = try FileMasterKeyProvider.generateKeyFile(at: directory + "/crm.key")
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }
}

/// A state machine on in-memory storage, with transactions applied as a log would apply them.
public final class TestState {
    public let kv: ReplicatedKV
    private var index: UInt64 = 0
    /// Every entry applied, in order (what a log would hold).
    public private(set) var entries: [Entry] = []

    public init() throws { kv = try ReplicatedKV(storage: MemoryStateStorage()) }

    @discardableResult
    public func apply(_ transaction: Transaction, at time: UInt64 = 1000) throws -> KVOutcome {
        // One test applies at a time, but an async test resumes on any thread: it is the loop.
        kv.applyThread.claim()
        index += 1
        let command = KVCommand.transaction(
            session: 0, sequence: 0, owner: "crm://client/test", proposedAtMillis: time, transaction)
        let entry = Entry(term: 1, index: index, data: command.encoded)
        entries.append(entry)
        return try kv.apply([entry])[0].outcome
    }
}
