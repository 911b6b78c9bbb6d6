import BinaryCoding
import Raft

/// Raft messages on the wire: a `raftMessages` frame holds a batch of them.
///
///     batch   := count:u32 message*
///     message := kind:u8 from:u64 to:u64 term:u64 logTerm:u64 index:u64 commit:u64
///                reject:u8 rejectHint:u64 context:blob entries snapshot
///     entries := count:u32 (term:u64 index:u64 kind:u8 data:blob)*
///     snapshot:= present:u8 [index:u64 term:u64 voters:ids learners:ids]
///
/// A snapshot message carries only the snapshot's metadata; its data follows in
/// `snapshotChunk` frames (see `SnapshotChunk`) and is attached by the receiver once it has
/// all arrived and been checked.
public enum RaftMessageCoding {
    /// Limits a decoder enforces whatever the frame size (a frame is already bounded).
    public static let maxMessagesPerBatch = 65_536
    public static let maxContextBytes = 4096
    public static let maxMembers = 1024

    public static func encode(_ messages: [Message]) -> [UInt8] {
        precondition(messages.count <= maxMessagesPerBatch, "batch of \(messages.count) messages")
        var writer = BinaryWriter(capacity: 64 * messages.count)
        writer.u32(UInt32(messages.count))
        for message in messages { encode(message, into: &writer) }
        return writer.bytes
    }

    public static func decode(_ payload: [UInt8]) throws(WireError) -> [Message] {
        var reader = BinaryReader(payload)
        guard let count = reader.u32() else { throw .malformed("batch without a count") }
        guard count <= maxMessagesPerBatch else {
            throw .malformed("batch of \(count) messages exceeds \(maxMessagesPerBatch)")
        }
        var messages: [Message] = []
        messages.reserveCapacity(Int(min(count, 1024)))
        for position in 0..<count {
            guard let message = decodeMessage(&reader) else {
                throw .malformed("message \(position) of \(count) is truncated or invalid")
            }
            messages.append(message)
        }
        guard reader.isAtEnd else { throw .malformed("\(reader.remaining) bytes after the last message") }
        return messages
    }

    private static func encode(_ message: Message, into writer: inout BinaryWriter) {
        writer.u8(kindCode(message.kind))
        writer.u64(message.from)
        writer.u64(message.to)
        writer.u64(message.term)
        writer.u64(message.logTerm)
        writer.u64(message.index)
        writer.u64(message.commit)
        writer.bool(message.reject)
        writer.u64(message.rejectHint)
        precondition(message.context.count <= maxContextBytes, "message context of \(message.context.count) bytes")
        writer.blob(message.context)
        writer.u32(UInt32(message.entries.count))
        for entry in message.entries {
            writer.u64(entry.term)
            writer.u64(entry.index)
            writer.u8(entry.kind.rawValue)
            writer.blob(entry.data)
        }
        if let snapshot = message.snapshot {
            writer.bool(true)
            writer.u64(snapshot.metadata.index)
            writer.u64(snapshot.metadata.term)
            writer.ids(snapshot.metadata.configuration.voters.sorted())
            writer.ids(snapshot.metadata.configuration.learners.sorted())
        } else {
            writer.bool(false)
        }
    }

    private static func decodeMessage(_ reader: inout BinaryReader) -> Message? {
        guard let code = reader.u8(), let kind = kind(code: code),
            let from = reader.u64(), let to = reader.u64(), let term = reader.u64(),
            let logTerm = reader.u64(), let index = reader.u64(), let commit = reader.u64(),
            let reject = reader.bool(), let rejectHint = reader.u64(),
            let context = reader.blob(limit: maxContextBytes), let entryCount = reader.u32()
        else { return nil }
        // Each entry takes at least 21 bytes: a count beyond what is left is a lie.
        guard from != 0, to != 0, Int(entryCount) <= reader.remaining / 21 else { return nil }
        var message = Message(kind: kind, from: from, to: to, term: term)
        message.logTerm = logTerm
        message.index = index
        message.commit = commit
        message.reject = reject
        message.rejectHint = rejectHint
        message.context = context
        message.entries.reserveCapacity(Int(entryCount))
        for _ in 0..<entryCount {
            guard let entryTerm = reader.u64(), let entryIndex = reader.u64(), let kindByte = reader.u8(),
                let entryKind = Entry.Kind(rawValue: kindByte), let data = reader.blob(limit: reader.remaining)
            else { return nil }
            message.entries.append(Entry(term: entryTerm, index: entryIndex, kind: entryKind, data: data))
        }
        guard let hasSnapshot = reader.bool() else { return nil }
        if hasSnapshot {
            guard let snapshotIndex = reader.u64(), let snapshotTerm = reader.u64(),
                let voters = reader.ids(limit: maxMembers), let learners = reader.ids(limit: maxMembers),
                let configuration = Configuration(decodedVoters: voters, learners: learners)
            else { return nil }
            let metadata = SnapshotMetadata(index: snapshotIndex, term: snapshotTerm, configuration: configuration)
            message.snapshot = Snapshot(metadata: metadata, data: [])
        }
        return message
    }

    /// Stable codes: the wire must not change when the enum's cases are reordered or renamed.
    static let kindCodes: [(Message.Kind, UInt8)] = [
        (.preVote, 1), (.preVoteResponse, 2), (.vote, 3), (.voteResponse, 4), (.append, 5),
        (.appendResponse, 6), (.heartbeat, 7), (.heartbeatResponse, 8), (.snapshot, 9),
        (.readIndex, 10), (.readIndexResponse, 11), (.timeoutNow, 12), (.propose, 13),
    ]

    static func kindCode(_ kind: Message.Kind) -> UInt8 { kindCodes.first { $0.0 == kind }!.1 }
    static func kind(code: UInt8) -> Message.Kind? { kindCodes.first { $0.1 == code }?.0 }
}
