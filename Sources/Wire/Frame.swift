import BinaryCoding

/// A unit on a peer connection: an 8-byte header, then the payload.
///
///     offset size field
///          0    2 magic 0xC3 0x52
///          2    1 version (1)
///          3    1 frame type
///          4    4 payload length (big-endian), at most the connection's frame limit
///
/// TLS protects integrity and confidentiality on the wire; snapshot chunks carry their own
/// checksums because they are reassembled into a file.
public struct FrameHeader: Equatable, Sendable {
    public static let magic: UInt16 = 0xC352
    public static let version: UInt8 = 1
    public static let byteCount = 8

    public var type: FrameType
    public var payloadBytes: UInt32

    public init(type: FrameType, payloadBytes: UInt32) {
        self.type = type
        self.payloadBytes = payloadBytes
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: Self.byteCount)
        writer.u16(Self.magic)
        writer.u8(Self.version)
        writer.u8(type.rawValue)
        writer.u32(payloadBytes)
        return writer.bytes
    }
}

public enum FrameType: UInt8, Sendable, CaseIterable {
    /// The first frame on a connection: who is calling (checked against its certificate).
    case hello = 1
    /// A batch of Raft messages.
    case raftMessages = 2
    /// One chunk of a snapshot being sent to a follower.
    case snapshotChunk = 3
}

public struct Frame: Equatable, Sendable {
    public var type: FrameType
    public var payload: [UInt8]

    public init(type: FrameType, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }

    /// Header and payload, ready to write.
    public var encoded: [UInt8] {
        precondition(payload.count <= Int(UInt32.max), "frame payload of \(payload.count) bytes")
        return FrameHeader(type: type, payloadBytes: UInt32(payload.count)).encoded + payload
    }
}

/// Splits a byte stream into frames, checking every header before buffering its payload: a
/// header that announces too much is refused at once, so a peer cannot make the node buffer
/// more than `maxFrameBytes` (plus one header) for it.
public struct FrameDecoder: Sendable {
    /// Applies to headers not yet read; a connection raises it once its peer is known.
    public var maxFrameBytes: Int {
        didSet { precondition(maxFrameBytes > 0) }
    }
    private var buffer: [UInt8] = []
    private var start = 0
    private var pending: FrameHeader?

    public init(maxFrameBytes: Int) {
        precondition(maxFrameBytes > 0)
        self.maxFrameBytes = maxFrameBytes
    }

    /// Bytes received and not yet part of a returned frame.
    public var bufferedBytes: Int { buffer.count - start }

    /// Adds received bytes.
    public mutating func feed(_ bytes: some Collection<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, nil if more bytes are needed; throws on the first bad header.
    public mutating func next() throws(WireError) -> Frame? {
        if pending == nil {
            guard bufferedBytes >= FrameHeader.byteCount else { return nil }
            pending = try parseHeader()
            start += FrameHeader.byteCount
        }
        let header = pending!
        guard bufferedBytes >= Int(header.payloadBytes) else { return nil }
        let payload = Array(buffer[start..<start + Int(header.payloadBytes)])
        start += Int(header.payloadBytes)
        pending = nil
        reclaim()
        return Frame(type: header.type, payload: payload)
    }

    private func parseHeader() throws(WireError) -> FrameHeader {
        var reader = BinaryReader(buffer[start..<start + FrameHeader.byteCount])
        let magic = reader.u16()!
        let version = reader.u8()!
        let type = reader.u8()!
        let length = reader.u32()!
        guard magic == FrameHeader.magic else { throw .badMagic(magic) }
        guard version == FrameHeader.version else { throw .unsupportedVersion(version) }
        guard let frameType = FrameType(rawValue: type) else { throw .unknownFrameType(type) }
        guard Int(length) <= maxFrameBytes else { throw .frameTooLarge(bytes: length, limit: maxFrameBytes) }
        return FrameHeader(type: frameType, payloadBytes: length)
    }

    private mutating func reclaim() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        } else if start > 1 << 16 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }
}
