import Logging
import Raft
import Storage

/// One member's Raft log, hard state and snapshot on the sealed storage engine.
///
/// - Entries live in `raft_log` under their index (8 bytes, big-endian); the hard state and the
///   snapshot (metadata, then its data in chunks) in `raft_state`. Every value is sealed by the
///   engine with AES-256-GCM bound to its family and key, so an entry cannot be moved to another
///   index, or a chunk to another place, without the read failing.
/// - `save` writes what a `Ready` asks for with synced writes: when it returns, the data is on
///   disk, and the messages that depend on it may leave.
/// - Opening checks the whole log: contiguous indexes, each entry opens and decodes and names its
///   own index, terms never decrease. A damaged or torn tail above the commit index is truncated
///   (the leader sends it again); damage at or below the commit index is refused with
///   `DurableLogError.damagedCommittedEntry` and nothing is served.
///
/// Used from one thread (the node's Raft loop). Read failures after a successful open stop the
/// process, as `LogStore` requires: the core cannot go on from a log it cannot read.
public final class DurableLogStore: LogStore {
    /// Recent entries kept in memory for replication (bytes).
    public static let defaultCacheBytes = 16 << 20
    /// Snapshot data is stored in chunks of this size.
    static let snapshotChunkBytes = 4 << 20
    /// Entries written per storage batch; a larger `save` is split, hard state in the last batch.
    static let maxBatchPayloadBytes = 64 << 20

    public let engine: StorageEngine
    private let logger: Logger
    public private(set) var hardState: HardState
    private(set) var stored: RecordCoding.StoredSnapshot
    /// Terms of the entries firstIndex...lastIndex, in order.
    private(set) var terms: [UInt64]
    private var cache: EntryCache
    /// What opening found and repaired.
    public let recovery: RecoveryReport
    /// Set when a write failed part-way; every later call throws until the store is reopened.
    private var failure: StorageError?
    /// The first entry kept on disk: below `firstIndex` when a compaction kept entries the
    /// snapshot covers for the log archiver (`compact(to:retainingFrom:)`); those are outside the
    /// Raft log and read only by `retainedEntries`.
    public private(set) var retainedFrom: UInt64

    private init(
        engine: StorageEngine, logger: Logger, hardState: HardState, stored: RecordCoding.StoredSnapshot,
        terms: [UInt64], cache: EntryCache, recovery: RecoveryReport, retainedFrom: UInt64
    ) {
        self.retainedFrom = retainedFrom
        self.engine = engine
        self.logger = logger
        self.hardState = hardState
        self.stored = stored
        self.terms = terms
        self.cache = cache
        self.recovery = recovery
    }

    // MARK: - LogStore

    public var snapshotMetadata: SnapshotMetadata { stored.metadata }
    public var firstIndex: UInt64 { stored.metadata.index + 1 }
    public var lastIndex: UInt64 { stored.metadata.index + UInt64(terms.count) }

    public func term(at index: UInt64) -> UInt64? {
        if index == stored.metadata.index { return stored.metadata.term }
        guard index > stored.metadata.index, index <= lastIndex else { return nil }
        return terms[Int(index - firstIndex)]
    }

    public func entries(from: UInt64, to: UInt64, maxBytes: Int) -> [Entry] {
        precondition(
            from >= firstIndex && to <= lastIndex + 1 && from <= to,
            "entries \(from)..<\(to) outside \(firstIndex)...\(lastIndex)")
        guard from < to else { return [] }
        if let cached = cache.entries(from: from, to: to, maxBytes: maxBytes) { return cached }
        do {
            return try readEntries(from: from, to: to, maxBytes: maxBytes)
        } catch {
            fatalError(
                "durable log: cannot read entries \(from)..<\(to): \(error). Stopping; a restart checks the log and reports the damage"
            )
        }
    }

    public func snapshot() -> Snapshot {
        do {
            return Snapshot(metadata: stored.metadata, data: try readSnapshotData(stored))
        } catch {
            fatalError(
                "durable log: cannot read the snapshot at \(stored.metadata.index): \(error). Stopping; a restart reports the damage"
            )
        }
    }

    // MARK: - Writing

    /// Persists what `ready` asks for (snapshot, entries, hard state); synced if `mustSync`.
    public func save(_ ready: Ready) throws(DurableLogError) {
        try save(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
    }

    /// Whether saving `ready` must reach stable storage before anything that depends on it
    /// happens: entries, a snapshot, or a new term or vote must. A commit index alone need not
    /// (etcd's WAL does the same): a member that loses it learns it again from the leader, and it
    /// cannot fall behind the state applied from it, because both go through the one write-ahead
    /// log of the store, the commit first, and a power loss keeps a prefix of that log. Saving
    /// it unsynced takes one fsync per write off the leader's path (two were paid per commit).
    public func mustSync(_ ready: Ready) -> Bool {
        mustSync(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
    }

    public func mustSync(snapshot: Snapshot?, entries: [Entry], hardState newHardState: HardState?) -> Bool {
        guard snapshot == nil, entries.isEmpty else { return true }
        guard let newHardState else { return false }
        return newHardState.term != hardState.term || newHardState.vote != hardState.vote
    }

    /// Persists a snapshot received from the leader, entries that follow (replacing stored
    /// entries at the same and later indexes) and the hard state, in that order; synced unless
    /// only the commit index changed (see `mustSync`).
    public func save(snapshot: Snapshot?, entries: [Entry], hardState newHardState: HardState?) throws(DurableLogError)
    {
        try checkUsable()
        let plan = try SavePlan(current: self, snapshot: snapshot, entries: entries, hardState: newHardState)
        if plan.isEmpty { return }
        let durability: Durability =
            mustSync(snapshot: snapshot, entries: entries, hardState: newHardState) ? .synced : .buffered
        try write(plan.batches(store: self), what: "save", durability: durability)
        if let installed = plan.installedSnapshot {
            stored = installed
            retainedFrom = installed.metadata.index + 1
            terms = plan.keptTerms
            cache.clear()
        } else if let first = entries.first {
            terms.removeLast(Int(lastIndex + 1 - first.index))
            cache.drop(from: first.index)
        }
        terms += entries.map(\.term)
        cache.store(entries)
        if let newHardState { hardState = newHardState }
        assertConsistent()
        assert(storedMatchesMemory(), "the raft log as read back from disk differs from what was saved")
    }

    /// Replaces the log up to `snapshot.metadata.index` (applied, and covered by the
    /// snapshot's data) with the snapshot. Entries from `retainingFrom` on stay on disk (outside
    /// the Raft log) for the log archiver; by default none do.
    public func compact(to snapshot: Snapshot, retainingFrom: UInt64? = nil) throws(DurableLogError) {
        try checkUsable()
        let index = snapshot.metadata.index
        guard index > stored.metadata.index else { return }
        let keepFrom = min(max(retainingFrom ?? index + 1, retainedFrom), index + 1)
        guard index <= lastIndex, term(at: index) == snapshot.metadata.term else {
            throw .invalidRequest(
                "compaction to \(index)/\(snapshot.metadata.term) does not match the log (\(firstIndex)...\(lastIndex))"
            )
        }
        guard index <= max(hardState.commit, stored.metadata.index) else {
            throw .invalidRequest("compaction to \(index) beyond the commit index \(hardState.commit)")
        }
        let installed = RecordCoding.StoredSnapshot(
            metadata: snapshot.metadata, dataBytes: UInt64(snapshot.data.count),
            chunkCount: Self.chunkCount(snapshot.data.count))
        var batches = chunkBatches(snapshot.data, snapshotIndex: index)
        var last = WriteBatch()
        if retainedFrom < keepFrom {
            last.deleteRange(.raftLog, from: LogKeys.entry(retainedFrom), to: LogKeys.entry(keepFrom))
        }
        last.put(.raftState, key: LogKeys.retainedFrom, value: KeyEncoding.bigEndian(keepFrom))
        putSnapshotMetadata(installed, replacing: stored, into: &last)
        batches.append(last)
        try write(batches, what: "compaction")
        terms.removeFirst(Int(index - stored.metadata.index))
        stored = installed
        retainedFrom = keepFrom
        cache.drop(through: index)
        assertConsistent()
    }

    /// Committed entries `from...through` for the log archiver, read from disk: retained ones
    /// (below `firstIndex`) and the log's own. Throws when one is gone or does not decode.
    public func retainedEntries(from: UInt64, through: UInt64, maxBytes: Int) throws(DurableLogError) -> [Entry] {
        try checkUsable()
        guard from >= retainedFrom, from <= through, through <= max(hardState.commit, stored.metadata.index) else {
            throw .invalidRequest(
                "entries \(from)...\(through) are not kept and committed (kept from \(retainedFrom), commit \(hardState.commit))"
            )
        }
        do {
            return try readEntries(from: from, to: through + 1, maxBytes: maxBytes)
        } catch let error as DurableLogError {
            throw error
        } catch {
            throw .storage(error as? StorageError ?? .rocksdb(operation: "read retained entries", message: "\(error)"))
        }
    }

    /// Writes the founding entry and hard state of a brand-new cluster (see `Bootstrap`).
    public func bootstrap(founders: [NodeID]) throws(DurableLogError) {
        guard lastIndex == 0, hardState == HardState(), stored.metadata.configuration.members.isEmpty else {
            throw .invalidRequest(
                "this member already has a log (last index \(lastIndex), term \(hardState.term)); bootstrap only starts a new cluster"
            )
        }
        try save(snapshot: nil, entries: [Bootstrap.firstEntry(founders: founders)], hardState: Bootstrap.hardState)
    }

    // MARK: - Internals

    private func checkUsable() throws(DurableLogError) {
        if let failure { throw .writeFailed(failure) }
    }

    private func write(
        _ batches: [WriteBatch], what: String, durability: Durability = .synced
    ) throws(DurableLogError) {
        do {
            for batch in batches where !batch.isEmpty { try engine.write(batch, durability: durability) }
        } catch {
            let storageError = error as? StorageError ?? .rocksdb(operation: what, message: "\(error)")
            failure = storageError
            logger.error(
                "durable log write failed; reopen to recover",
                metadata: ["operation": "\(what)", "error": "\(storageError)"])
            throw .writeFailed(storageError)
        }
    }

    func chunkBatches(_ data: [UInt8], snapshotIndex: UInt64) -> [WriteBatch] {
        var batches: [WriteBatch] = []
        var batch = WriteBatch()
        for chunk in 0..<Int(Self.chunkCount(data.count)) {
            let start = chunk * Self.snapshotChunkBytes
            let bytes = Array(data[start..<min(data.count, start + Self.snapshotChunkBytes)])
            if batch.payloadBytes + bytes.count > Self.maxBatchPayloadBytes {
                batches.append(batch)
                batch = WriteBatch()
            }
            batch.put(.raftState, key: LogKeys.chunk(snapshotIndex: snapshotIndex, number: UInt32(chunk)), value: bytes)
        }
        if !batch.isEmpty { batches.append(batch) }
        return batches
    }

    /// The metadata of `new`, and the removal of `old`'s chunks (unless they are the same).
    func putSnapshotMetadata(
        _ new: RecordCoding.StoredSnapshot, replacing old: RecordCoding.StoredSnapshot,
        into batch: inout WriteBatch
    ) {
        batch.put(.raftState, key: LogKeys.snapshot, value: RecordCoding.encode(new))
        if old.metadata.index != new.metadata.index && old.chunkCount > 0 {
            batch.deleteRange(
                .raftState, from: LogKeys.chunk(snapshotIndex: old.metadata.index, number: 0),
                to: LogKeys.chunk(snapshotIndex: old.metadata.index + 1, number: 0))
        }
    }

    static func chunkCount(_ bytes: Int) -> UInt32 {
        UInt32((bytes + snapshotChunkBytes - 1) / snapshotChunkBytes)
    }

    private func readEntries(from: UInt64, to: UInt64, maxBytes: Int) throws -> [Entry] {
        var result: [Entry] = []
        var total = 0
        var range = KeyRange(from: LogKeys.entry(from), to: LogKeys.entry(to))
        while true {
            let page = try engine.scan(.raftLog, range, limit: min(Int(to - from), StorageLimits.maxScanEntries))
            for item in page.entries {
                let expected = from + UInt64(result.count)
                guard item.key == LogKeys.entry(expected), let entry = RecordCoding.decodeEntry(item.value),
                    entry.index == expected
                else {
                    throw DurableLogError.damagedCommittedEntry(
                        index: expected, reason: "the stored record is not entry \(expected)")
                }
                if !result.isEmpty && total + entry.sizeBytes > maxBytes { return result }
                total += entry.sizeBytes
                result.append(entry)
            }
            guard let resume = page.resume else { break }
            range = resume
        }
        guard result.count == Int(to - from) else {
            throw DurableLogError.damagedCommittedEntry(
                index: from + UInt64(result.count), reason: "the entry is missing")
        }
        return result
    }

    func readSnapshotData(_ snapshot: RecordCoding.StoredSnapshot) throws -> [UInt8] {
        var data: [UInt8] = []
        data.reserveCapacity(Int(snapshot.dataBytes))
        for chunk in 0..<snapshot.chunkCount {
            guard
                let bytes = try engine.get(
                    .raftState, LogKeys.chunk(snapshotIndex: snapshot.metadata.index, number: chunk))
            else {
                throw DurableLogError.damagedSnapshot(
                    "chunk \(chunk) of \(snapshot.chunkCount) of the snapshot at \(snapshot.metadata.index) is missing")
            }
            data += bytes
        }
        guard data.count == Int(snapshot.dataBytes) else {
            throw DurableLogError.damagedSnapshot(
                "the snapshot at \(snapshot.metadata.index) holds \(data.count) bytes, its metadata says \(snapshot.dataBytes)"
            )
        }
        return data
    }

    /// The other side of the disk boundary (debug builds, after every save): the hard state,
    /// the snapshot record and the last entry read back from RocksDB, bypassing the cache, are
    /// what memory says was written. The same reads `open` makes, so save and open agree.
    private func storedMatchesMemory() -> Bool {
        guard let onDisk = try? Self.readHardState(engine), onDisk == hardState,
            let snapshot = try? Self.readStoredSnapshot(engine), snapshot.metadata == stored.metadata
        else { return false }
        guard lastIndex > stored.metadata.index else { return true }
        guard let last = try? readEntries(from: lastIndex, to: lastIndex + 1, maxBytes: .max).first else {
            return false
        }
        return last.term == terms.last && (try? engine.get(.raftLog, LogKeys.entry(lastIndex + 1))) == .some(nil)
    }

    private func assertConsistent() {
        assert(terms.count == Int(lastIndex - stored.metadata.index))
        assert(retainedFrom <= firstIndex, "retained entries start after the log does")
        assert(hardState.commit <= lastIndex || hardState.commit <= stored.metadata.index)
        assert(
            zip(terms, terms.dropFirst()).allSatisfy { $0 <= $1 }
                && (terms.first ?? stored.metadata.term) >= stored.metadata.term)
    }

    // MARK: - Opening

    /// Opens the log on `engine`, checking all of it (see the type's documentation).
    public static func open(
        engine: StorageEngine, cacheBytes: Int = defaultCacheBytes,
        logger: Logger = Logger(label: "crm.raft.log")
    ) throws(DurableLogError) -> DurableLogStore {
        do {
            let hardState = try readHardState(engine)
            let stored = try readStoredSnapshot(engine)
            var recovery = RecoveryReport()
            let retainedFrom = try readRetainedFrom(engine, snapshot: stored.metadata)
            try removeStaleRecords(engine, snapshot: stored, retainedFrom: retainedFrom)
            var cache = EntryCache(capacityBytes: cacheBytes)
            let scan = try LogScan.run(engine: engine, after: stored.metadata, cache: &cache)
            let lastIndex = stored.metadata.index + UInt64(scan.terms.count)
            let committed = max(hardState.commit, stored.metadata.index)
            if let problem = scan.problem {
                guard problem.index > committed else {
                    throw DurableLogError.damagedCommittedEntry(index: problem.index, reason: problem.reason)
                }
                try truncateTail(engine, from: problem.index)
                recovery.truncatedFrom = problem.index
                recovery.truncationReason = problem.reason
                logger.warning(
                    "raft log tail truncated",
                    metadata: [
                        "from_index": "\(problem.index)", "reason": "\(problem.reason)", "commit": "\(committed)",
                    ])
            }
            guard committed <= lastIndex else {
                throw DurableLogError.damagedCommittedEntry(
                    index: lastIndex + 1,
                    reason: "the hard state says \(committed) is committed, but the log ends at \(lastIndex)")
            }
            recovery.entries = scan.terms.count
            let store = DurableLogStore(
                engine: engine, logger: logger, hardState: hardState, stored: stored,
                terms: scan.terms, cache: cache, recovery: recovery, retainedFrom: retainedFrom)
            store.assertConsistent()
            assert(store.storedMatchesMemory(), "the raft log opened differs from what is on disk")
            logger.info(
                "raft log opened",
                metadata: [
                    "first_index": "\(store.firstIndex)", "last_index": "\(lastIndex)", "term": "\(hardState.term)",
                    "commit": "\(hardState.commit)", "snapshot_index": "\(stored.metadata.index)",
                ])
            return store
        } catch let error as DurableLogError {
            throw error
        } catch let error as StorageError {
            throw .storage(error)
        } catch {
            throw .storage(.rocksdb(operation: "open raft log", message: "\(error)"))
        }
    }

    private static func readHardState(_ engine: StorageEngine) throws -> HardState {
        let bytes: [UInt8]?
        do { bytes = try engine.get(.raftState, LogKeys.hardState) } catch let error as StorageError {
            throw DurableLogError.damagedHardState("\(error)")
        }
        guard let bytes else { return HardState() }
        guard let state = RecordCoding.decodeHardState(bytes) else {
            throw DurableLogError.damagedHardState("it does not decode")
        }
        return state
    }

    private static func readStoredSnapshot(_ engine: StorageEngine) throws -> RecordCoding.StoredSnapshot {
        let bytes: [UInt8]?
        do { bytes = try engine.get(.raftState, LogKeys.snapshot) } catch let error as StorageError {
            throw DurableLogError.damagedSnapshot("\(error)")
        }
        guard let bytes else {
            let empty = SnapshotMetadata(index: 0, term: 0, configuration: Configuration(voters: []))
            return RecordCoding.StoredSnapshot(metadata: empty, dataBytes: 0, chunkCount: 0)
        }
        guard let stored = RecordCoding.decodeStoredSnapshot(bytes) else {
            throw DurableLogError.damagedSnapshot("its metadata does not decode")
        }
        return stored
    }

    /// Where the retained entries start: the stored mark when it is at or below the snapshot
    /// (a snapshot installed since removed what it marked), else just after the snapshot.
    private static func readRetainedFrom(_ engine: StorageEngine, snapshot: SnapshotMetadata) throws -> UInt64 {
        let after = snapshot.index + 1
        guard let bytes = try engine.get(.raftState, LogKeys.retainedFrom) else { return after }
        guard bytes.count == 8 else {
            throw DurableLogError.damagedSnapshot("its retained-entries mark does not decode")
        }
        let mark = bytes.reduce(0) { $0 << 8 | UInt64($1) }
        return (1...after).contains(mark) ? mark : after
    }

    /// Chunks of snapshots other than the current one (left by a crash while one was being
    /// installed) and entries the snapshot covers that are not retained. Range deletions:
    /// nothing is read.
    private static func removeStaleRecords(
        _ engine: StorageEngine, snapshot: RecordCoding.StoredSnapshot, retainedFrom: UInt64
    ) throws {
        var batch = WriteBatch()
        let index = snapshot.metadata.index
        batch.deleteRange(.raftState, from: LogKeys.chunkPrefix, to: LogKeys.chunk(snapshotIndex: index, number: 0))
        batch.deleteRange(.raftState, from: LogKeys.chunk(snapshotIndex: index + 1, number: 0), to: LogKeys.chunkEnd)
        batch.deleteRange(.raftLog, from: LogKeys.entry(0), to: LogKeys.entry(retainedFrom))
        try engine.write(batch, durability: .synced)
    }

    private static func truncateTail(_ engine: StorageEngine, from index: UInt64) throws {
        var batch = WriteBatch()
        batch.deleteRange(.raftLog, from: LogKeys.entry(index), to: LogKeys.afterAllEntries)
        try engine.write(batch, durability: .synced)
    }
}

/// What opening the log found.
public struct RecoveryReport: Sendable, Equatable {
    /// Entries after the snapshot that passed every check.
    public var entries = 0
    /// Where a damaged or torn tail (above the commit index) was cut off, if anywhere.
    public var truncatedFrom: UInt64?
    public var truncationReason: String?
}

/// Keys in `raft_log` and `raft_state`.
enum LogKeys {
    static let hardState = Array("hard-state".utf8)
    static let snapshot = Array("snapshot".utf8)
    static let chunkPrefix = Array("snapshot-chunk/".utf8)
    static let chunkEnd = KeyEncoding.prefixEnd(chunkPrefix)!
    /// The first entry kept below the snapshot for the log archiver (8 bytes, big-endian).
    static let retainedFrom = Array("retained-from".utf8)
    /// Above every 8-byte entry key.
    static let afterAllEntries = entry(.max) + [0]

    static func entry(_ index: UInt64) -> [UInt8] { KeyEncoding.bigEndian(index) }

    static func index(ofEntryKey key: [UInt8]) -> UInt64? {
        guard key.count == 8 else { return nil }
        return key.reduce(0) { $0 << 8 | UInt64($1) }
    }

    static func chunk(snapshotIndex: UInt64, number: UInt32) -> [UInt8] {
        chunkPrefix + KeyEncoding.bigEndian(snapshotIndex) + KeyEncoding.bigEndian(number)
    }
}
