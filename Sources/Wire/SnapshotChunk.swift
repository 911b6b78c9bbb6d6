import BinaryCoding

/// One piece of a snapshot on its way to a follower, in a `snapshotChunk` frame:
///
///     index:u64 term:u64 totalBytes:u64 offset:u64 crc32c:u32 data:blob
///
/// Chunks of one snapshot are sent in order after the snapshot message itself; each carries
/// the CRC-32C of its data, and the receiver checks offsets, sizes and checksums before it
/// hands the snapshot to the consensus core.
public struct SnapshotChunk: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var totalBytes: UInt64
    public var offset: UInt64
    public var data: [UInt8]
    public var checksum: UInt32

    public init(index: UInt64, term: UInt64, totalBytes: UInt64, offset: UInt64, data: [UInt8]) {
        self.index = index
        self.term = term
        self.totalBytes = totalBytes
        self.offset = offset
        self.data = data
        checksum = CRC32C.checksum(data)
    }

    /// Splits `data` into chunks of at most `chunkBytes` (an empty snapshot is one empty chunk).
    public static func split(_ data: [UInt8], index: UInt64, term: UInt64, chunkBytes: Int) -> [SnapshotChunk] {
        precondition(chunkBytes > 0)
        let offsets = data.isEmpty ? [0] : Array(stride(from: 0, to: data.count, by: chunkBytes))
        return offsets.map { start in
            SnapshotChunk(
                index: index, term: term, totalBytes: UInt64(data.count), offset: UInt64(start),
                data: Array(data[start..<min(data.count, start + chunkBytes)]))
        }
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 40 + data.count)
        writer.u64(index)
        writer.u64(term)
        writer.u64(totalBytes)
        writer.u64(offset)
        writer.u32(checksum)
        writer.blob(data)
        return writer.bytes
    }

    public init(encoded payload: [UInt8]) throws(WireError) {
        var reader = BinaryReader(payload)
        guard let index = reader.u64(), let term = reader.u64(), let totalBytes = reader.u64(),
            let offset = reader.u64(),
            let checksum = reader.u32(), let data = reader.blob(), reader.isAtEnd
        else {
            throw .malformed("snapshot chunk is truncated")
        }
        self.index = index
        self.term = term
        self.totalBytes = totalBytes
        self.offset = offset
        self.data = data
        self.checksum = checksum
        guard CRC32C.checksum(data) == checksum else {
            throw .malformed("snapshot chunk at offset \(offset) fails its checksum")
        }
        guard offset <= totalBytes, UInt64(data.count) <= totalBytes - offset else {
            throw .malformed("snapshot chunk at offset \(offset) runs past the snapshot's \(totalBytes) bytes")
        }
    }
}

/// Reassembles one snapshot from its chunks, in order, refusing anything out of place.
public struct SnapshotAssembly: Sendable {
    public let index: UInt64
    public let term: UInt64
    public let totalBytes: UInt64
    public private(set) var data: [UInt8] = []

    /// Starts a snapshot announced to be `totalBytes` long; refused above `maxBytes`.
    public init(index: UInt64, term: UInt64, totalBytes: UInt64, maxBytes: Int) throws(WireError) {
        guard totalBytes <= UInt64(maxBytes) else {
            throw .malformed("snapshot of \(totalBytes) bytes exceeds the limit of \(maxBytes) bytes")
        }
        self.index = index
        self.term = term
        self.totalBytes = totalBytes
        data.reserveCapacity(Int(totalBytes))
    }

    public var isComplete: Bool { UInt64(data.count) == totalBytes }

    public mutating func add(_ chunk: SnapshotChunk) throws(WireError) {
        guard chunk.index == index, chunk.term == term, chunk.totalBytes == totalBytes else {
            throw .malformed("chunk of snapshot \(chunk.index)/\(chunk.term) while receiving \(index)/\(term)")
        }
        guard chunk.offset == UInt64(data.count) else {
            throw .malformed("snapshot chunk at offset \(chunk.offset), expected \(data.count)")
        }
        // Checked here too, not only when a chunk is decoded: the assembly never holds more than
        // it announced (found by the snapshot-assembly fuzzing harness).
        guard UInt64(chunk.data.count) <= totalBytes - UInt64(data.count) else {
            throw .malformed(
                "snapshot chunk of \(chunk.data.count) bytes at offset \(chunk.offset) runs past the snapshot's \(totalBytes) bytes"
            )
        }
        data += chunk.data
    }
}
