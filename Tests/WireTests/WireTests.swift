import BinaryCoding
import Raft
import Testing

@testable import Wire

@Suite struct FrameTests {
    @Test func framesSurviveAnySplitOfTheStream() throws {
        let frames = [
            Frame(type: .hello, payload: Array("node 2".utf8)), Frame(type: .raftMessages, payload: []),
            Frame(type: .snapshotChunk, payload: [UInt8](repeating: 9, count: 5000)),
        ]
        let stream = frames.flatMap(\.encoded)
        for piece in [1, 3, 7, 64, stream.count] {
            var decoder = FrameDecoder(maxFrameBytes: 1 << 16)
            var received: [Frame] = []
            var offset = 0
            while offset < stream.count {
                decoder.feed(stream[offset..<min(stream.count, offset + piece)])
                offset += piece
                while let frame = try decoder.next() { received.append(frame) }
            }
            #expect(received == frames, "pieces of \(piece) bytes")
            #expect(decoder.bufferedBytes == 0)
        }
    }

    /// An oversized frame is refused from its header alone, before its payload is buffered.
    @Test func anOversizedFrameIsRefusedFromItsHeader() {
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        decoder.feed(FrameHeader(type: .raftMessages, payloadBytes: 1025).encoded)
        #expect(throws: WireError.frameTooLarge(bytes: 1025, limit: 1024)) { try decoder.next() }
    }

    @Test func garbageAndUnknownVersionsOrTypesAreRefused() {
        var garbage = FrameDecoder(maxFrameBytes: 1024)
        garbage.feed(Array("GET / HTTP/1.1\r\n".utf8))
        #expect(throws: WireError.badMagic(0x4745)) { try garbage.next() }

        var future = FrameDecoder(maxFrameBytes: 1024)
        future.feed([0xC3, 0x52, 9, 1, 0, 0, 0, 0])
        #expect(throws: WireError.unsupportedVersion(9)) { try future.next() }

        var unknown = FrameDecoder(maxFrameBytes: 1024)
        unknown.feed([0xC3, 0x52, 1, 77, 0, 0, 0, 0])
        #expect(throws: WireError.unknownFrameType(77)) { try unknown.next() }
    }

    /// A truncated frame is simply incomplete: nothing is returned until the rest arrives.
    @Test func aTruncatedFrameWaitsForTheRest() throws {
        let frame = Frame(type: .raftMessages, payload: [1, 2, 3, 4, 5])
        var decoder = FrameDecoder(maxFrameBytes: 1024)
        decoder.feed(frame.encoded.dropLast(2))
        #expect(try decoder.next() == nil)
        decoder.feed(frame.encoded.suffix(2))
        #expect(try decoder.next() == frame)
    }
}

@Suite struct RaftMessageCodingTests {
    static func sampleMessages() -> [Message] {
        var append = Message(kind: .append, from: 1, to: 2, term: 7)
        append.logTerm = 6
        append.index = 41
        append.commit = 40
        append.entries = [
            Entry(term: 7, index: 42, data: Array("put k v".utf8)),
            Entry(term: 7, index: 43, kind: .configurationChange, data: ConfigurationChange.addLearner(4).encoded),
            Entry(term: 7, index: 44),
        ]
        var rejection = Message(kind: .appendResponse, from: 2, to: 1, term: 7)
        rejection.reject = true
        rejection.index = 41
        rejection.rejectHint = 30
        rejection.logTerm = 5
        var read = Message(kind: .readIndex, from: 3, to: 1, term: 7)
        read.context = [1, 2, 3, 4, 5, 6, 7, 8]
        var snapshot = Message(kind: .snapshot, from: 1, to: 3, term: 7)
        snapshot.snapshot = Snapshot(
            metadata: SnapshotMetadata(
                index: 100, term: 6, configuration: Configuration(voters: [1, 2, 3], learners: [4])),
            data: [])
        return [append, rejection, read, snapshot]
            + RaftMessageCoding.kindCodes.map { Message(kind: $0.0, from: 5, to: 6, term: 1) }
    }

    @Test func messagesRoundTripExactly() throws {
        let messages = Self.sampleMessages()
        let decoded = try RaftMessageCoding.decode(RaftMessageCoding.encode(messages))
        #expect(decoded == messages)
        #expect(decoded[3].snapshot?.metadata.index == 100)
        #expect(decoded[0].snapshot == nil)
    }

    @Test func everyKindHasItsOwnStableCode() {
        let codes = RaftMessageCoding.kindCodes.map(\.1)
        #expect(Set(codes).count == codes.count)
        for kind in [
            Message.Kind.preVote, .preVoteResponse, .vote, .voteResponse, .append, .appendResponse, .heartbeat,
            .heartbeatResponse, .snapshot, .readIndex, .readIndexResponse, .timeoutNow, .propose,
        ] {
            #expect(RaftMessageCoding.kind(code: RaftMessageCoding.kindCode(kind)) == kind)
        }
    }

    /// Every truncation of a valid batch, and every single-byte change of it, either decodes to
    /// something valid or is refused with an error: the decoder never traps or over-reads.
    @Test func truncatedOrAlteredBatchesAreRefusedWithoutHarm() {
        let bytes = RaftMessageCoding.encode(Self.sampleMessages())
        for length in 0..<bytes.count {
            #expect(throws: WireError.self) { try RaftMessageCoding.decode(Array(bytes.prefix(length))) }
        }
        for position in bytes.indices {
            for flip: UInt8 in [0x01, 0x80, 0xFF] {
                var altered = bytes
                altered[position] ^= flip
                _ = try? RaftMessageCoding.decode(altered)
            }
        }
        #expect(throws: WireError.self) { try RaftMessageCoding.decode(bytes + [0]) }
    }

    /// Counts that promise more than the frame holds are refused before anything is reserved.
    @Test func countsBeyondThePayloadAreRefused() {
        var writer = BinaryWriter()
        writer.u32(UInt32.max)
        #expect(throws: WireError.self) { try RaftMessageCoding.decode(writer.bytes) }
        var lying = RaftMessageCoding.encode([Message(kind: .append, from: 1, to: 2, term: 1)])
        // The entry count sits after the 4-byte batch count, 1 + 6×8 + 1 + 8 header bytes and a 4-byte context length.
        let entryCount = 4 + 1 + 48 + 1 + 8 + 4
        lying.replaceSubrange(entryCount..<entryCount + 4, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.self) { try RaftMessageCoding.decode(lying) }
    }
}

@Suite struct CRC32CTests {
    /// The check value of the CRC-32C catalogue, and that it can be computed in pieces.
    @Test func matchesTheStandardCheckValueAndContinues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        let whole = CRC32C.checksum(Array("hello, world".utf8))
        #expect(CRC32C.checksum(Array(", world".utf8), continuing: CRC32C.checksum(Array("hello".utf8))) == whole)
    }

    /// The CPU's instruction and the table agree, at every length and alignment around the
    /// 8-byte steps, and when continued.
    @Test func theInstructionAndTheTableAgree() {
        var random = SeededRandom(seed: 42)
        let data = (0..<5100).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        #expect(CRC32C.portableChecksum(Array("123456789".utf8)) == 0xE306_9283)
        for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4999] {
            for start in 0..<9 {
                let piece = Array(data[start..<start + length])
                #expect(CRC32C.checksum(piece) == CRC32C.portableChecksum(piece), "length \(length) at \(start)")
                #expect(
                    CRC32C.checksum(piece, continuing: 0xDEAD_BEEF)
                        == CRC32C.portableChecksum(piece, continuing: 0xDEAD_BEEF))
            }
        }
    }
}

@Suite struct SnapshotChunkTests {
    @Test func chunksArriveInOrderAndEndWithTheLast() throws {
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let chunks = SnapshotChunk.split(data, index: 50, term: 3, chunkBytes: 4096)
        #expect(chunks.count == 4)
        #expect(chunks.map(\.isLast) == [false, false, false, true])
        var check = SnapshotStreamCheck(index: 50, term: 3, maxBytes: 1 << 20)
        var received: [UInt8] = []
        for chunk in chunks {
            let decoded = try SnapshotChunk(encoded: chunk.encoded)
            #expect(!check.isComplete)
            try check.accept(decoded)
            received += decoded.data
        }
        #expect(check.isComplete && received == data && check.receivedBytes == UInt64(data.count))
        #expect(check.checksum == CRC32C.checksum(data))
        #expect(SnapshotChunk.split([], index: 1, term: 1, chunkBytes: 10).count == 1)
    }

    @Test func damagedMisplacedOversizedOrLateChunksAreRefused() throws {
        let chunks = SnapshotChunk.split([UInt8](repeating: 5, count: 300), index: 9, term: 2, chunkBytes: 100)
        var damaged = try SnapshotChunk(encoded: chunks[0].encoded)
        damaged.data[99] ^= 1
        var check = SnapshotStreamCheck(index: 9, term: 2, maxBytes: 1000)
        #expect(throws: WireError.self) { try check.accept(damaged) }
        #expect(throws: WireError.self) { try check.accept(chunks[1]) }
        #expect(check.receivedBytes == 0)
        try check.accept(chunks[0])
        #expect(throws: WireError.self) {
            try check.accept(SnapshotChunk.split([1], index: 8, term: 2, chunkBytes: 1)[0])
        }
        var small = SnapshotStreamCheck(index: 9, term: 2, maxBytes: 150)
        try small.accept(chunks[0])
        #expect(throws: WireError.self) { try small.accept(chunks[1]) }
        for chunk in chunks.dropFirst() { try check.accept(chunk) }
        #expect(check.isComplete)
        #expect(throws: WireError.self) { try check.accept(chunks[3]) }
    }
}
