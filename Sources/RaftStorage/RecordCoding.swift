import BinaryCoding
import Raft

/// The byte layouts of what the durable log stores. Every record starts with a format version;
/// integers are big-endian. The storage engine seals each value (AES-256-GCM bound to its
/// column family and key), so these layouts need no checksums of their own; decoding still
/// checks every length and field, and refuses what it does not understand.
enum RecordCoding {
    static let version: UInt8 = 1
    /// Most voters or learners a stored configuration may name.
    static let maxMembers = 1024

    // MARK: Entries (raft_log, key = index)

    /// version, kind, term, index, then the payload.
    static func encode(_ entry: Entry) -> [UInt8] {
        var writer = BinaryWriter(capacity: 18 + entry.data.count)
        writer.u8(version)
        writer.u8(entry.kind.rawValue)
        writer.u64(entry.term)
        writer.u64(entry.index)
        writer.raw(entry.data)
        return writer.bytes
    }

    static func decodeEntry(_ bytes: [UInt8]) -> Entry? {
        var reader = BinaryReader(bytes)
        guard reader.u8() == version, let kindByte = reader.u8(), let kind = Entry.Kind(rawValue: kindByte),
            let term = reader.u64(), let index = reader.u64(), term > 0, index > 0
        else { return nil }
        return Entry(term: term, index: index, kind: kind, data: reader.rest())
    }

    // MARK: Hard state (raft_state)

    static func encode(_ state: HardState) -> [UInt8] {
        var writer = BinaryWriter(capacity: 25)
        writer.u8(version)
        writer.u64(state.term)
        writer.u64(state.vote)
        writer.u64(state.commit)
        return writer.bytes
    }

    static func decodeHardState(_ bytes: [UInt8]) -> HardState? {
        var reader = BinaryReader(bytes)
        guard reader.u8() == version, let term = reader.u64(), let vote = reader.u64(), let commit = reader.u64(),
            reader.isAtEnd
        else { return nil }
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
        var writer = BinaryWriter(capacity: 41 + 8 * configuration.members.count)
        writer.u8(version)
        writer.u64(stored.metadata.index)
        writer.u64(stored.metadata.term)
        writer.ids(configuration.voters.sorted())
        writer.ids(configuration.learners.sorted())
        writer.u64(stored.dataBytes)
        writer.u32(stored.chunkCount)
        return writer.bytes
    }

    static func decodeStoredSnapshot(_ bytes: [UInt8]) -> StoredSnapshot? {
        var reader = BinaryReader(bytes)
        guard reader.u8() == version, let index = reader.u64(), let term = reader.u64(),
            let voters = reader.ids(limit: maxMembers), let learners = reader.ids(limit: maxMembers),
            let dataBytes = reader.u64(), let chunkCount = reader.u32(), reader.isAtEnd
        else { return nil }
        guard let configuration = Configuration(decodedVoters: voters, learners: learners), (index == 0) == (term == 0)
        else { return nil }
        let metadata = SnapshotMetadata(index: index, term: term, configuration: configuration)
        return StoredSnapshot(metadata: metadata, dataBytes: dataBytes, chunkCount: chunkCount)
    }
}
