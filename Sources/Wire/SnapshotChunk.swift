import BinaryCoding

/// One piece of a snapshot on its way to a follower, in a `snapshotChunk` frame:
///
///     index:u64 term:u64 offset:u64 last:u8 runningCRC:u32 data:blob
///
/// The chunks of one snapshot follow the snapshot message, in order, until one marked last;
/// the leader reads them from its state as they go, so nobody states the size up front. Each
/// carries the CRC-32C of every byte of the snapshot up to the end of its own data, so the
/// receiver checks each chunk and, at the last, the whole stream.
public struct SnapshotChunk: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var offset: UInt64
    public var isLast: Bool
    public var runningChecksum: UInt32
    public var data: [UInt8]

    /// The chunk after `offset` bytes whose checksum was `previousChecksum`.
    public init(
        index: UInt64, term: UInt64, offset: UInt64, isLast: Bool, data: [UInt8], previousChecksum: UInt32
    ) {
        self.index = index
        self.term = term
        self.offset = offset
        self.isLast = isLast
        self.data = data
        runningChecksum = CRC32C.checksum(data, continuing: previousChecksum)
    }

    /// Splits data held in memory into chunks of at most `chunkBytes`, the last one empty.
    public static func split(_ data: [UInt8], index: UInt64, term: UInt64, chunkBytes: Int) -> [SnapshotChunk] {
        precondition(chunkBytes > 0)
        var chunks: [SnapshotChunk] = []
        var checksum: UInt32 = 0
        for start in stride(from: 0, to: data.count, by: chunkBytes) {
            let chunk = SnapshotChunk(
                index: index, term: term, offset: UInt64(start), isLast: false,
                data: Array(data[start..<min(data.count, start + chunkBytes)]), previousChecksum: checksum)
            checksum = chunk.runningChecksum
            chunks.append(chunk)
        }
        chunks.append(
            SnapshotChunk(
                index: index, term: term, offset: UInt64(data.count), isLast: true, data: [], previousChecksum: checksum
            ))
        return chunks
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 40 + data.count)
        writer.u64(index)
        writer.u64(term)
        writer.u64(offset)
        writer.bool(isLast)
        writer.u32(runningChecksum)
        writer.blob(data)
        return writer.bytes
    }

    public init(encoded payload: [UInt8]) throws(WireError) {
        var reader = BinaryReader(payload)
        guard let index = reader.u64(), let term = reader.u64(), let offset = reader.u64(),
            let isLast = reader.bool(), let checksum = reader.u32(), let data = reader.blob(), reader.isAtEnd
        else {
            throw .malformed("snapshot chunk is truncated")
        }
        guard offset <= UInt64.max - UInt64(data.count) else {
            throw .malformed("snapshot chunk at offset \(offset) runs past the largest offset")
        }
        self.index = index
        self.term = term
        self.offset = offset
        self.isLast = isLast
        self.data = data
        runningChecksum = checksum
    }
}

/// Checks the chunks of one snapshot as they arrive: the right snapshot, in order, each with
/// the running checksum it should have, within `maxBytes`, ending with one marked last.
public struct SnapshotStreamCheck: Sendable {
    public let index: UInt64
    public let term: UInt64
    public let maxBytes: UInt64
    public private(set) var receivedBytes: UInt64 = 0
    public private(set) var checksum: UInt32 = 0
    public private(set) var isComplete = false

    public init(index: UInt64, term: UInt64, maxBytes: UInt64) {
        self.index = index
        self.term = term
        self.maxBytes = maxBytes
    }

    /// Accepts the next chunk, or says why it does not belong (nothing is counted then).
    public mutating func accept(_ chunk: SnapshotChunk) throws(WireError) {
        guard !isComplete else { throw .malformed("a snapshot chunk after the last one") }
        guard chunk.index == index, chunk.term == term else {
            throw .malformed("chunk of snapshot \(chunk.index)/\(chunk.term) while receiving \(index)/\(term)")
        }
        guard chunk.offset == receivedBytes else {
            throw .malformed("snapshot chunk at offset \(chunk.offset), expected \(receivedBytes)")
        }
        guard UInt64(chunk.data.count) <= maxBytes - receivedBytes else {
            throw .malformed("the snapshot runs past the limit of \(maxBytes) bytes")
        }
        let expected = CRC32C.checksum(chunk.data, continuing: checksum)
        guard expected == chunk.runningChecksum else {
            throw .malformed("snapshot chunk at offset \(chunk.offset) fails its checksum")
        }
        receivedBytes += UInt64(chunk.data.count)
        checksum = expected
        isComplete = chunk.isLast
    }
}
