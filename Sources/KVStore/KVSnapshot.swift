import BinaryCoding
import Raft
import Sealing
import Storage

/// Snapshots of the state machine, for followers that are too far behind, and a digest of the
/// whole state to compare members.
///
/// Format: version, applied index, term, log clock, then every record (values and sessions) as
/// key blob and value blob, in key order, read from one consistent view. It is written and
/// read as a stream: neither side holds a whole snapshot in memory.
extension ReplicatedKV {
    static let snapshotVersion: UInt8 = 1

    /// Everything the state machine holds at its applied index, from one consistent view, in
    /// memory (tests and tools with small states; members stream `pinState()`).
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

    /// Reads a whole snapshot and checks that it decodes and sits at `expectedIndex`, changing
    /// nothing: the member refuses a bad snapshot before its log records it (a streamed
    /// snapshot cannot be checked whole before the restore starts writing).
    public func check(snapshot: Snapshot, expectedIndex: UInt64) throws {
        var parser = SnapshotParser(try snapshot.openReader())
        try Self.expect(try parser.header(), at: expectedIndex)
        while try parser.nextRecord() != nil {}
    }

    /// Replaces the whole state with a snapshot's (from the leader), reading it in pieces and
    /// bulk-loading the records (`StateStorage.replace`: on RocksDB, table files ingested whole),
    /// so its memory does not depend on the snapshot's size. Refuses a snapshot that does not
    /// sit at `expectedIndex` before anything is changed; `check` beforehand refuses one that
    /// does not decode or is out of order. Until the load is complete the state has no applied
    /// position (see `needsRestore`), so a crash midway restores again from the start.
    public func restore(from snapshot: Snapshot, expectedIndex: UInt64) throws {
        var parser = SnapshotParser(try snapshot.openReader())
        let restored = try parser.header()
        try Self.expect(restored, at: expectedIndex)
        // The position goes first (durably): from here until the last line, a crash leaves the
        // state without one and the member restores again from the start.
        var unpositioned = WriteBatch()
        unpositioned.delete(.metadata, key: StateKeys.position)
        try storage.write(unpositioned, durability: .synced)
        let records = try storage.replace(.stateMachine, ranges: StateKeys.allPrefixes.map(KeyRange.prefix)) {
            try parser.nextRecord()
        }
        var positioned = WriteBatch()
        positioned.put(.metadata, key: StateKeys.position, value: Self.encode(restored))
        try storage.write(positioned, durability: .synced)
        try reload()
        logger.info(
            "kv state restored from a snapshot",
            metadata: ["index": "\(restored.index)", "records": "\(records)", "bytes": "\(parser.bytesRead)"])
    }

    /// Replaces the whole state with `next`'s records (absolute keys under the backed-up
    /// prefixes, in ascending order) at `position`: a restore from a logical backup, into a new
    /// member's store. As with a snapshot, the position is written last: until then the state
    /// has none, and a crash midway leaves a store that a new restore replaces.
    public func restore(at position: Position, records next: () throws -> BulkRecord?) throws -> Int {
        precondition(position.index > 0, "a restored state holds at least the founding entry")
        var unpositioned = WriteBatch()
        unpositioned.delete(.metadata, key: StateKeys.position)
        try storage.write(unpositioned, durability: .synced)
        let ranges = BackedUpState.prefixes.map(KeyRange.prefix)
        let records = try storage.replace(.stateMachine, ranges: ranges) {
            guard let record = try next() else { return nil }
            guard BackedUpState.prefixes.contains(where: { record.key.starts(with: $0) }) else {
                throw StorageError.invalidArgument("a restored record lies outside the CRM and KV prefixes")
            }
            return record
        }
        var positioned = WriteBatch()
        positioned.put(.metadata, key: StateKeys.position, value: Self.encode(position))
        try storage.write(positioned, durability: .synced)
        try reload()
        return records
    }

    private static func expect(_ restored: Position, at expectedIndex: UInt64) throws {
        guard restored.index == expectedIndex else {
            throw StorageError.invalidArgument(
                "the snapshot holds the state at \(restored.index), its metadata says \(expectedIndex)")
        }
    }

    /// A snapshot's position and records, or why it does not decode (nothing is written).
    @_spi(Fuzzing) public static func parseSnapshot(
        _ data: [UInt8]
    ) throws -> (Position, [(key: [UInt8], value: [UInt8])]) {
        var parser = SnapshotParser(BytesSnapshotReader(data))
        let position = try parser.header()
        var records: [(key: [UInt8], value: [UInt8])] = []
        while let record = try parser.nextRecord() { records.append(record) }
        return (position, records)
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
/// streamed from this view. A view pins old versions in RocksDB and delays the retirement of
/// rotated data keys: it is released when the last holder (the member loop, or a snapshot
/// still on its way to a follower) lets go of it.
///
/// Sendable: the view only reads (RocksDB reads at a snapshot are safe from any thread), and
/// it is closed once, when the last reference goes.
public final class PinnedState: SnapshotSource, @unchecked Sendable {
    public let position: ReplicatedKV.Position
    private let view: any StateStorageView

    init(position: ReplicatedKV.Position, view: any StateStorageView) {
        self.position = position
        self.view = view
    }

    /// A reader of the snapshot at `position` (format: see `ReplicatedKV.restore`), holding
    /// this state until it is done.
    public func openReader() throws -> any SnapshotReader { PinnedStateReader(self, view: view) }

    /// Nothing to do: the state is the leader's own, already durable.
    public func makeDurable() throws {}

    /// The whole snapshot in memory: for the simulator and tests, whose states are small.
    public func snapshotData() throws -> [UInt8] { try readAll() }

    /// The records under each of `prefixes` (absolute state keys), prefix by prefix, each in key
    /// order, read from this state's view: a logical backup reads the state through it.
    public func forEachRecord(under prefixes: [[UInt8]], _ body: ([UInt8], [UInt8]) throws -> Void) throws {
        for prefix in prefixes {
            var range = KeyRange.prefix(prefix)
            while true {
                let page = try view.scan(.stateMachine, range, limit: 4096)
                for item in page.entries { try body(item.key, item.value) }
                guard let resume = page.resume else { break }
                range = resume
            }
        }
    }

    deinit { view.close() }
}

/// Encodes a pinned state as a snapshot, a page of records at a time: the header, then each
/// record as key blob and value blob, in key order.
final class PinnedStateReader: SnapshotReader {
    private let state: PinnedState
    private let view: any StateStorageView
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private var prefixes = StateKeys.allPrefixes[...]
    private var range: KeyRange?
    /// Records per scan, adjusted to keep a page near `pageBytes` (values range from a few
    /// bytes to 1 MiB).
    private var pageLimit = 256
    static let pageBytes = 4 << 20

    init(_ state: PinnedState, view: any StateStorageView) {
        self.state = state
        self.view = view
        var header = BinaryWriter(capacity: 25)
        header.u8(ReplicatedKV.snapshotVersion)
        header.u64(state.position.index)
        header.u64(state.position.term)
        header.u64(state.position.logClockMillis)
        pending = header.bytes
    }

    func read(maxBytes: Int) throws -> [UInt8]? {
        precondition(maxBytes > 0)
        while pending.count - pendingStart < maxBytes, try encodeNextPage() {}
        guard pendingStart < pending.count else { return nil }
        let end = min(pending.count, pendingStart + maxBytes)
        let piece = Array(pending[pendingStart..<end])
        pendingStart = end
        if pendingStart == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingStart = 0
        }
        return piece
    }

    /// Appends the next page of records to `pending`; false when every record is in it.
    private func encodeNextPage() throws -> Bool {
        if range == nil {
            guard let prefix = prefixes.popFirst() else { return false }
            range = .prefix(prefix)
        }
        let page = try view.scan(.stateMachine, range!, limit: pageLimit, direction: .forward)
        if pendingStart > 0 {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
        var bytes = 0
        for item in page.entries {
            var record = BinaryWriter(capacity: item.key.count + item.value.count + 8)
            record.blob(item.key)
            record.blob(item.value)
            pending += record.bytes
            bytes += record.bytes.count
        }
        if !page.entries.isEmpty {
            let average = max(1, bytes / page.entries.count)
            pageLimit = max(1, min(1024, Self.pageBytes / average))
        }
        range = page.resume
        return true
    }
}

/// Reads a snapshot's header and records from a reader, holding at most one record and one
/// piece read beyond it.
struct SnapshotParser {
    private let reader: any SnapshotReader
    private var buffer: [UInt8] = []
    private var cursor = 0
    private var ended = false
    private(set) var bytesRead: UInt64 = 0
    private var records = 0
    /// The last record's prefix (its index in `StateKeys.allPrefixes`) and key.
    private var previous: (prefix: Int, key: [UInt8])?
    static let readBytes = 1 << 20

    init(_ reader: any SnapshotReader) { self.reader = reader }

    mutating func header() throws -> ReplicatedKV.Position {
        precondition(bytesRead == 0, "the header is read first")
        guard try fill(25) else {
            throw StorageError.invalidArgument("the snapshot does not start with a KV snapshot header")
        }
        var fields = BinaryReader(take(25))
        guard fields.u8() == ReplicatedKV.snapshotVersion, let index = fields.u64(), let term = fields.u64(),
            let clock = fields.u64()
        else {
            throw StorageError.invalidArgument("the snapshot does not start with a KV snapshot header")
        }
        return ReplicatedKV.Position(index: index, term: term, logClockMillis: clock)
    }

    /// The next record, or nil at the end of the data (which must fall between records).
    /// Records come as the snapshot writes them: by prefix in `StateKeys.allPrefixes` order,
    /// keys strictly ascending within a prefix (the restore loads them as sorted table files).
    mutating func nextRecord() throws -> (key: [UInt8], value: [UInt8])? {
        guard try fill(1) else { return nil }
        guard let key = try blob(limit: StorageLimits.maxKeyBytes),
            let value = try blob(limit: StorageLimits.maxValueBytes),
            let prefix = StateKeys.allPrefixes.firstIndex(where: { key.starts(with: $0) })
        else {
            throw StorageError.invalidArgument("the snapshot's record \(records) is malformed")
        }
        if let previous,
            prefix < previous.prefix || (prefix == previous.prefix && !previous.key.lexicographicallyPrecedes(key))
        {
            throw StorageError.invalidArgument("the snapshot's record \(records) is out of order")
        }
        previous = (prefix, key)
        records += 1
        return (key, value)
    }

    private mutating func blob(limit: Int) throws -> [UInt8]? {
        guard try fill(4) else { return nil }
        let length = take(4).reduce(0) { $0 << 8 | Int($1) }
        guard length <= limit, try fill(length) else { return nil }
        return Array(take(length))
    }

    /// Whether `count` bytes are buffered past the cursor, reading more as needed.
    private mutating func fill(_ count: Int) throws -> Bool {
        while buffer.count - cursor < count && !ended {
            if cursor > 0 {
                buffer.removeFirst(cursor)
                cursor = 0
            }
            if let piece = try reader.read(maxBytes: max(Self.readBytes, count - buffer.count)) {
                buffer += piece
            } else {
                ended = true
            }
        }
        return buffer.count - cursor >= count
    }

    private mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        assert(buffer.count - cursor >= count, "took bytes that were not filled")
        defer {
            cursor += count
            bytesRead += UInt64(count)
        }
        return buffer[cursor..<cursor + count]
    }
}
