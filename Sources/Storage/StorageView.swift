import Synchronization

/// A consistent point-in-time view of the whole store (all column families), for snapshots and
/// backups. Reads through it see exactly the data present when it was made, even while writes
/// and key rotations continue. Release it with `close()` (or by dropping it): it pins old data.
public final class StorageView: Sendable {
    let engine: StorageEngine
    let id: UInt64
    private let readOptions: ReadOptions
    private let snapshot: Snapshot

    init(engine: StorageEngine, id: UInt64, snapshot: Snapshot) {
        self.engine = engine
        self.id = id
        self.snapshot = snapshot
        self.readOptions = ReadOptions(snapshot: snapshot, verifyChecksums: true)
    }

    public func get(_ family: ColumnFamily, _ key: [UInt8]) throws -> [UInt8]? {
        try validateKey(key, family)
        return try engine.whileOpen {
            try engine.requireLive(self)
            return try engine.read(family, key, readOptions: readOptions)
        }
    }

    public func scan(
        _ family: ColumnFamily, _ range: KeyRange, limit: Int,
        direction: ScanDirection = .forward
    ) throws -> ScanPage {
        try engine.whileOpen {
            try engine.requireLive(self)
            return try engine.scan(family, range, limit: limit, direction: direction, snapshot: snapshot)
        }
    }

    /// Releases the view; idempotent.
    public func close() {
        engine.releaseView(id)
    }

    deinit { close() }
}

/// Live views and the key-retirement epochs they pin.
struct ViewRegistry {
    struct Entry {
        let snapshot: Snapshot
        let epoch: UInt64
    }

    private(set) var live: [UInt64: Entry] = [:]
    private var nextID: UInt64 = 1
    /// Advanced when a re-seal pass completes; views from earlier epochs may still read values
    /// sealed with the keys that pass drained.
    private(set) var epoch: UInt64 = 0
    /// The epoch closed by the last completed pass whose keys are not yet retired. Nil after a
    /// restart: views do not survive one, so none can pin the drained keys.
    private var retireEpoch: UInt64?

    mutating func register(_ snapshot: Snapshot) -> UInt64 {
        let id = nextID
        nextID += 1
        live[id] = Entry(snapshot: snapshot, epoch: epoch)
        return id
    }

    mutating func remove(_ id: UInt64) -> Snapshot? { live.removeValue(forKey: id)?.snapshot }

    mutating func removeAll() -> [Snapshot] {
        defer { live = [:] }
        return live.values.map(\.snapshot)
    }

    /// A re-seal pass completed: views open now may still read values under the drained keys.
    mutating func passCompleted() {
        retireEpoch = epoch
        epoch += 1
    }

    /// Views that may still read values under keys drained by the last completed pass.
    var viewsPinningDrainedKeys: Int {
        guard let retireEpoch else { return 0 }
        return live.values.count { $0.epoch <= retireEpoch }
    }

    mutating func drainedKeysRetired() { retireEpoch = nil }
}

extension StorageEngine {
    /// A consistent view of every column family as of now.
    public func makeView() throws -> StorageView {
        try whileOpen {
            let snapshot = database.makeSnapshot()
            let id = views.withLock { $0.register(snapshot) }
            return StorageView(engine: self, id: id, snapshot: snapshot)
        }
    }

    func requireLive(_ view: StorageView) throws {
        guard views.withLock({ $0.live[view.id] != nil }) else {
            throw StorageError.invalidArgument("the storage view was closed")
        }
    }

    func releaseView(_ id: UInt64) {
        let released: Bool =
            (try? whileOpen {
                guard let snapshot = views.withLock({ $0.remove(id) }) else { return false }
                database.release(snapshot)
                return true
            }) ?? false
        // A key retirement may have been waiting for this view.
        if released { retireDrainedKeysIfIdle() }
    }
}
