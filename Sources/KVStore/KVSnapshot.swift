import BinaryCoding
import Sealing
import Storage

/// Snapshots of the state machine, for followers that are too far behind, and a digest of the
/// whole state to compare members.
///
/// Format: version, applied index, term, log clock, then every record (values and sessions) as
/// key blob and value blob, in key order, read from one consistent view.
extension ReplicatedKV {
    static let snapshotVersion: UInt8 = 1

    /// Everything the state machine holds at its applied index, from one consistent view.
    public func snapshotData() throws -> (position: Position, data: [UInt8]) {
        let state = try pinState()
        return (state.position, try state.snapshotData())
    }

    /// The state as it is now, held (a consistent storage view) so that a snapshot at this
    /// applied index can still be read after the state machine has moved on.
    public func pinState() throws -> PinnedState {
        let view = try storage.makeStateView()
        do {
            return PinnedState(position: try Self.position(in: view), view: view)
        } catch {
            view.close()
            throw error
        }
    }

    /// Replaces the whole state with a snapshot's (from the leader). Refuses a snapshot that
    /// does not decode or does not sit at `expectedIndex`, before anything is changed. Large
    /// snapshots are written in several batches; until the last is written the state has no
    /// applied position (see `needsRestore`).
    public func restore(from data: [UInt8], expectedIndex: UInt64) throws {
        let (restored, records) = try Self.parseSnapshot(data)
        guard restored.index == expectedIndex else {
            throw StorageError.invalidArgument(
                "the snapshot holds the state at \(restored.index), its metadata says \(expectedIndex)")
        }
        // The first batch also removes the applied position: a crash before the last batch
        // leaves a state with no position, which the node restores again from the log's snapshot.
        var batch = WriteBatch()
        batch.delete(.metadata, key: StateKeys.position)
        for prefix in StateKeys.allPrefixes {
            batch.deleteRange(.stateMachine, from: prefix, to: KeyEncoding.prefixEnd(prefix)!)
        }
        for record in records {
            if batch.count >= Self.maxOperationsPerBatch || batch.payloadBytes >= Self.maxBatchBytes {
                try storage.write(batch, durability: .buffered)
                batch = WriteBatch()
            }
            batch.put(.stateMachine, key: record.key, value: record.value)
        }
        batch.put(.metadata, key: StateKeys.position, value: Self.encode(restored))
        try storage.write(batch, durability: .synced)
        try reload()
        logger.info(
            "kv state restored from a snapshot",
            metadata: ["index": "\(restored.index)", "records": "\(records.count)"])
    }

    /// A snapshot's position and records, or why it does not decode (nothing is written).
    @_spi(Fuzzing) public static func parseSnapshot(
        _ data: [UInt8]
    ) throws -> (Position, [(key: [UInt8], value: [UInt8])]) {
        var reader = BinaryReader(data)
        guard reader.u8() == Self.snapshotVersion, let index = reader.u64(), let term = reader.u64(),
            let clock = reader.u64()
        else {
            throw StorageError.invalidArgument("the snapshot does not start with a KV snapshot header")
        }
        var records: [(key: [UInt8], value: [UInt8])] = []
        while !reader.isAtEnd {
            guard let key = reader.blob(limit: StorageLimits.maxKeyBytes), let value = reader.blob(),
                StateKeys.allPrefixes.contains(where: { key.starts(with: $0) })
            else {
                throw StorageError.invalidArgument("the snapshot's record \(records.count) is malformed")
            }
            records.append((key, value))
        }
        return (Position(index: index, term: term, logClockMillis: clock), records)
    }

    /// SHA-256 (hex) of the applied index and every record, from one consistent view: members
    /// that hold the same state at the same index give the same digest.
    public func stateHash() throws -> (index: UInt64, hash: String) {
        let view = try storage.makeStateView()
        defer { view.close() }
        let position = try Self.position(in: view)
        let hasher = SHA256Hasher()
        var header = BinaryWriter()
        header.u64(position.index)
        hasher.update(header.bytes)
        try Self.forEachRecord(in: view) { key, value in
            var record = BinaryWriter(capacity: key.count + value.count + 8)
            record.blob(key)
            record.blob(value)
            hasher.update(record.bytes)
        }
        return (position.index, hasher.finish().map { String(format: "%02x", $0) }.joined())
    }

    static func forEachRecord(in view: any StateStorageView, _ body: ([UInt8], [UInt8]) throws -> Void) throws {
        for prefix in StateKeys.allPrefixes {
            var range = KeyRange.prefix(prefix)
            while true {
                let page = try view.scan(.stateMachine, range, limit: 4096)
                for item in page.entries { try body(item.key, item.value) }
                guard let resume = page.resume else { break }
                range = resume
            }
        }
    }

    private static func position(in view: any StateStorageView) throws -> Position {
        guard let bytes = try view.get(.metadata, StateKeys.position) else {
            return Position(index: 0, term: 0, logClockMillis: 0)
        }
        return try decodePosition(bytes)
    }
}

/// The state machine as it was at one applied index, held by a consistent storage view: the
/// log is compacted without copying the state, and a follower that needs a snapshot gets it
/// read from this view. A view pins old versions in RocksDB and delays the retirement of
/// rotated data keys, so holders release it (`release()`, or by dropping it) when not needed.
public final class PinnedState {
    public let position: ReplicatedKV.Position
    private var view: (any StateStorageView)?

    init(position: ReplicatedKV.Position, view: any StateStorageView) {
        self.position = position
        self.view = view
    }

    /// The snapshot at `position` (format: see `ReplicatedKV.restore(from:expectedIndex:)`).
    public func snapshotData() throws -> [UInt8] {
        guard let view else { throw StorageError.invalidArgument("the pinned state was released") }
        var writer = BinaryWriter(capacity: 1 << 16)
        writer.u8(ReplicatedKV.snapshotVersion)
        writer.u64(position.index)
        writer.u64(position.term)
        writer.u64(position.logClockMillis)
        try ReplicatedKV.forEachRecord(in: view) { key, value in
            writer.blob(key)
            writer.blob(value)
        }
        return writer.bytes
    }

    public func release() {
        view?.close()
        view = nil
    }

    deinit { release() }
}
