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
        if let decoded = try? RaftMessageCoding.decode(input) {
            // Snapshot data travels in chunks, not in the message: compare without it.
            let messages = decoded.map { item -> Message in
                var message = item.message
                message.snapshot?.data = []
                return message
            }
            let again = try? RaftMessageCoding.decode(RaftMessageCoding.encode(messages))
            precondition(again?.map(\.message) == messages, "a message batch does not survive a round trip")
        }
        if let chunk = try? SnapshotChunk(encoded: input) {
            precondition(chunk.encoded == input, "a snapshot chunk does not re-encode to its bytes")
        }
        TransportFuzzing.hello(input)
    }

    /// Chunks, each `u16 length ‖ payload`, into an assembly whose total comes from the first
    /// four bytes (at most 1 MiB): it accepts only chunks in order and never exceeds its total.
    static func snapshotAssembly(_ input: [UInt8]) {
        guard input.count >= 4 else { return }
        let total = input.prefix(4).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } % (1 << 20 + 1)
        guard var assembly = try? SnapshotAssembly(index: 7, term: 2, totalBytes: total, maxBytes: 1 << 20) else {
            return
        }
        var rest = input.dropFirst(4)
        while rest.count >= 2 {
            let length = Int(rest.first!) << 8 | Int(rest.dropFirst().first!)
            rest = rest.dropFirst(2)
            let payload = Array(rest.prefix(length))
            rest = rest.dropFirst(length)
            // Half the chunks are well-formed for this assembly, so that assembly makes progress.
            let chunk =
                payload.first.map { $0 & 1 == 0 } ?? true
                ? SnapshotChunk(
                    index: 7, term: 2, totalBytes: total, offset: UInt64(assembly.data.count), data: payload)
                : (try? SnapshotChunk(encoded: payload))
            guard let chunk else { continue }
            do { try assembly.add(chunk) } catch { return }
            precondition(UInt64(assembly.data.count) <= total, "assembled \(assembly.data.count) of \(total) bytes")
            if assembly.isComplete { return }
        }
    }
}
