import Raft

/// The durable log's record decoders for the fuzzing harnesses: whatever decodes re-encodes to
/// a record that decodes to the same value; a broken property traps.
@_spi(Fuzzing) public enum RaftStorageFuzzing {
    public static func records(_ bytes: [UInt8]) {
        if let entry = RecordCoding.decodeEntry(bytes) {
            precondition(
                RecordCoding.decodeEntry(RecordCoding.encode(entry)) == entry,
                "an entry record does not survive a round trip")
        }
        if let state = RecordCoding.decodeHardState(bytes) {
            precondition(
                RecordCoding.decodeHardState(RecordCoding.encode(state)) == state,
                "a hard state does not survive a round trip")
        }
        if let stored = RecordCoding.decodeStoredSnapshot(bytes) {
            precondition(
                RecordCoding.decodeStoredSnapshot(RecordCoding.encode(stored)) == stored,
                "a snapshot record does not survive a round trip")
        }
        if let change = ConfigurationChange(encoded: bytes) {
            precondition(
                ConfigurationChange(encoded: change.encoded) == change,
                "a membership change does not survive a round trip")
        }
    }
}

extension RaftStorageFuzzing {
    public static func seeds() -> [[UInt8]] {
        [
            RecordCoding.encode(Entry(term: 3, index: 9, data: [1, 2, 3])),
            RecordCoding.encode(
                Entry(
                    term: 1, index: 1, kind: .configurationChange,
                    data: ConfigurationChange.bootstrap([1, 2, 3]).encoded)),
            RecordCoding.encode(HardState(term: 4, vote: 2, commit: 9)),
            RecordCoding.encode(
                RecordCoding.StoredSnapshot(
                    metadata: SnapshotMetadata(
                        index: 9, term: 3, configuration: Configuration(voters: [1, 2, 3], learners: [4])),
                    dataBytes: 100, chunkCount: 1)),
            ConfigurationChange.promote(4).encoded,
        ]
    }
}
