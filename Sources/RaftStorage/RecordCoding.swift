import Raft

/// The byte layouts of what the durable log stores. Every record starts with a format version;
/// integers are big-endian. The storage engine seals each value (AES-256-GCM bound to its
/// column family and key), so these layouts need no checksums of their own; decoding still
/// checks every length and field, and refuses what it does not understand.
enum RecordCoding {
    static let version: UInt8 = 1

    // MARK: Entries (raft_log, key = index)

    /// version, kind, term, index, then the payload.
    static func encode(_ entry: Entry) -> [UInt8] {
        var writer = RecordWriter(capacity: 18 + entry.data.count)
        writer.byte(version)
        writer.byte(entry.kind.rawValue)
        writer.u64(entry.term)
        writer.u64(entry.index)
        writer.bytes(entry.data)
        return writer.output
    }

    static func decodeEntry(_ bytes: [UInt8]) -> Entry? {
        var reader = RecordReader(bytes)
        guard reader.byte() == version, let kindByte = reader.byte(), let kind = Entry.Kind(rawValue: kindByte),
              let term = reader.u64(), let index = reader.u64(), term > 0, index > 0 else { return nil }
        return Entry(term: term, index: index, kind: kind, data: reader.rest())
    }

    // MARK: Hard state (raft_state)

    static func encode(_ state: HardState) -> [UInt8] {
        var writer = RecordWriter(capacity: 25)
        writer.byte(version)
        writer.u64(state.term)
        writer.u64(state.vote)
        writer.u64(state.commit)
        return writer.output
    }

    static func decodeHardState(_ bytes: [UInt8]) -> HardState? {
        var reader = RecordReader(bytes)
        guard reader.byte() == version, let term = reader.u64(), let vote = reader.u64(), let commit = reader.u64(),
              reader.isAtEnd else { return nil }
        return HardState(term: term, vote: vote, commit: commit)
    }

    // MARK: Snapshot metadata (raft_state)

    /// The metadata, and how the snapshot's data is stored: its length and number of chunks.
    struct StoredSnapshot: Equatable {
        var metadata: SnapshotMetadata
        var dataBytes: UInt64
        var chunkCount: UInt32
    }

    static func encode(_ stored: StoredSnapshot) -> [UInt8] {
        let configuration = stored.metadata.configuration
        var writer = RecordWriter(capacity: 41 + 8 * configuration.members.count)
        writer.byte(version)
        writer.u64(stored.metadata.index)
        writer.u64(stored.metadata.term)
        writer.ids(configuration.voters.sorted())
        writer.ids(configuration.learners.sorted())
        writer.u64(stored.dataBytes)
        writer.u32(stored.chunkCount)
        return writer.output
    }

    static func decodeStoredSnapshot(_ bytes: [UInt8]) -> StoredSnapshot? {
        var reader = RecordReader(bytes)
        guard reader.byte() == version, let index = reader.u64(), let term = reader.u64(),
              let voters = reader.ids(), let learners = reader.ids(),
              let dataBytes = reader.u64(), let chunkCount = reader.u32(), reader.isAtEnd else { return nil }
        let voterSet = Set(voters)
        let learnerSet = Set(learners)
        // What Configuration's initialiser would refuse with a trap is refused here as damage.
        guard voterSet.count == voters.count, learnerSet.count == learners.count, !voterSet.contains(0),
              !learnerSet.contains(0), voterSet.isDisjoint(with: learnerSet), (index == 0) == (term == 0) else { return nil }
        let metadata = SnapshotMetadata(index: index, term: term, configuration: Configuration(voters: voterSet, learners: learnerSet))
        return StoredSnapshot(metadata: metadata, dataBytes: dataBytes, chunkCount: chunkCount)
    }
}

struct RecordWriter {
    private(set) var output: [UInt8] = []

    init(capacity: Int) { output.reserveCapacity(capacity) }

    mutating func byte(_ value: UInt8) { output.append(value) }

    mutating func u32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func u64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func ids(_ ids: [UInt64]) {
        u32(UInt32(ids.count))
        for id in ids { u64(id) }
    }

    mutating func bytes(_ value: [UInt8]) { output.append(contentsOf: value) }
}

struct RecordReader {
    private let input: [UInt8]
    private var position = 0

    init(_ input: [UInt8]) { self.input = input }

    var isAtEnd: Bool { position == input.count }

    mutating func byte() -> UInt8? {
        guard position < input.count else { return nil }
        defer { position += 1 }
        return input[position]
    }

    mutating func u32() -> UInt32? {
        guard input.count - position >= 4 else { return nil }
        defer { position += 4 }
        return input[position..<position + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func u64() -> UInt64? {
        guard input.count - position >= 8 else { return nil }
        defer { position += 8 }
        return input[position..<position + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// A count, then that many ids; the count is checked against the bytes left first.
    mutating func ids() -> [UInt64]? {
        guard let count = u32(), UInt64(count) * 8 <= UInt64(input.count - position) else { return nil }
        return (0..<Int(count)).map { _ in u64()! }
    }

    mutating func rest() -> [UInt8] {
        defer { position = input.count }
        return Array(input[position...])
    }
}
