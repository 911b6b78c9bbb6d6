import Raft
@_spi(Fuzzing) import Transport
import Wire

/// The peer wire format against any bytes.
enum WireHarnesses {
    /// The input fed to a decoder in pieces whose sizes come from the input itself: frames come
    /// out or a clear error, and the decoder never holds more than one frame plus a header.
    static func frameStream(_ input: [UInt8]) {
        let limit = 4096
        var decoder = FrameDecoder(maxFrameBytes: limit)
        var rest = input[...]
        var step = 1
        while !rest.isEmpty {
            let size = Int(rest.first!) * step % 97 + 1
            step += 1
            decoder.feed(rest.prefix(size))
            rest = rest.dropFirst(size)
            do {
                while let frame = try decoder.next() {
                    precondition(frame.payload.count <= limit, "a frame over the limit came out")
                }
            } catch {
                return
            }
            precondition(
                decoder.bufferedBytes <= limit + FrameHeader.byteCount + 97,
                "the decoder holds \(decoder.bufferedBytes) bytes")
        }
    }

    /// What decodes re-encodes to bytes that decode to the same values.
    static func roundTrip(_ input: [UInt8]) {
        if let messages = try? RaftMessageCoding.decode(input) {
            // Snapshot data travels in chunks, not in the message.
            precondition(
                messages.allSatisfy { $0.snapshot?.hasData != true }, "a decoded message carries snapshot data")
            let again = try? RaftMessageCoding.decode(RaftMessageCoding.encode(messages))
            precondition(again == messages, "a message batch does not survive a round trip")
        }
        if let chunk = try? SnapshotChunk(encoded: input) {
            precondition(chunk.encoded == input, "a snapshot chunk does not re-encode to its bytes")
        }
        TransportFuzzing.hello(input)
    }

    /// Chunks, each `u16 length ‖ payload`, into a stream check whose size limit comes from the
    /// first four bytes (at most 1 MiB): it accepts only chunks in order with the checksum
    /// they should have, never counts past its limit, and nothing after the last.
    static func snapshotAssembly(_ input: [UInt8]) {
        guard input.count >= 4 else { return }
        let limit = input.prefix(4).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } % (1 << 20 + 1)
        var check = SnapshotStreamCheck(index: 7, term: 2, maxBytes: limit)
        var rest = input.dropFirst(4)
        while rest.count >= 2 {
            let length = Int(rest.first!) << 8 | Int(rest.dropFirst().first!)
            rest = rest.dropFirst(2)
            let payload = Array(rest.prefix(length))
            rest = rest.dropFirst(length)
            // Half the chunks are well-formed for this stream, so that it makes progress.
            let chunk =
                payload.first.map { $0 & 1 == 0 } ?? true
                ? SnapshotChunk(
                    index: 7, term: 2, offset: check.receivedBytes, isLast: payload.count % 7 == 0, data: payload,
                    previousChecksum: check.checksum)
                : (try? SnapshotChunk(encoded: payload))
            guard let chunk else { continue }
            let before = check.receivedBytes
            do { try check.accept(chunk) } catch {
                precondition(check.receivedBytes == before, "a refused chunk was counted")
                return
            }
            precondition(check.receivedBytes <= limit, "received \(check.receivedBytes) of at most \(limit) bytes")
            if check.isComplete {
                let after = SnapshotChunk(
                    index: 7, term: 2, offset: check.receivedBytes, isLast: true, data: [],
                    previousChecksum: check.checksum)
                precondition((try? check.accept(after)) == nil, "a chunk after the last was accepted")
                return
            }
        }
    }
}
