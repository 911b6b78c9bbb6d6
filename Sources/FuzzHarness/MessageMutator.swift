import Raft
import Wire

/// A structure-aware mutator for inputs that carry Raft messages: it decodes them, changes one
/// thing a hostile peer could (a term, index, commit or hint set to a boundary value, entries
/// made non-contiguous, an entry turned into a membership change, the kind swapped, a message
/// repeated or dropped), and encodes them again, so that most mutated inputs reach the core
/// instead of stopping at the decoder.
public enum MessageMutator {
    static let boundaries: [UInt64] = [
        0, 1, 2, 3, 7, 100, 1 << 32, (1 << 32) + 1, MessageLimits.maxWireValue, MessageLimits.maxWireValue + 1,
        UInt64(Int64.max), UInt64(Int64.max) + 1, .max - 1, .max,
    ]
    static let kinds: [Message.Kind] = [
        .preVote, .preVoteResponse, .vote, .voteResponse, .append, .appendResponse, .heartbeat,
        .heartbeatResponse, .snapshot, .readIndex, .readIndexResponse, .timeoutNow, .propose,
    ]

    /// The mutated input, or nil when it does not decode (then the fuzzer's own mutator runs).
    public static func mutate(_ input: [UInt8], harness: Harness, seed: UInt64) -> [UInt8]? {
        let prefix = harness == .raftStep ? Array(input.prefix(1)) : []
        guard harness.mutatesMessages, let decoded = try? RaftMessageCoding.decode(Array(input.dropFirst(prefix.count)))
        else { return nil }
        var messages = decoded
        var random = SeededRandom(seed: seed)
        if messages.isEmpty { messages = [Message(kind: .heartbeat, from: 2, to: 1, term: 1)] }
        let target = Int(random.next(below: UInt64(messages.count)))
        var message = messages[target]
        let boundary = boundaries[Int(random.next(below: UInt64(boundaries.count)))]
        switch random.next(below: 12) {
        case 0: message.term = boundary
        case 1: message.logTerm = boundary
        case 2: message.index = boundary
        case 3: message.commit = boundary
        case 4: message.rejectHint = boundary; message.reject = true
        case 5: message.kind = kinds[Int(random.next(below: UInt64(kinds.count)))]
        case 6:
            // Entries that do not follow each other, or repeat earlier indexes.
            if message.entries.isEmpty {
                message.entries = [Entry(term: message.term, index: message.index &+ 1, data: [1])]
            }
            message.entries.append(
                Entry(term: message.term, index: random.next(below: 4) == 0 ? boundary : message.index, data: [2]))
        case 7:
            let data: [UInt8] =
                random.next(below: 2) == 0 ? [] : ConfigurationChange.remove(1 + random.next(below: 3)).encoded
            message.entries.append(
                Entry(term: message.term, index: message.index &+ 1, kind: .configurationChange, data: data))
        case 8:
            message.snapshot = Snapshot(
                metadata: SnapshotMetadata(
                    index: boundary, term: message.term, configuration: Configuration(voters: [1, 2, 3])),
                data: [])
        case 9: messages.append(message)
        case 10:
            if messages.count > 1 { messages.remove(at: target); return prefix + RaftMessageCoding.encode(messages) }
        default: message.from = 2 + random.next(below: 2); message.to = 1
        }
        messages[target] = message
        return prefix + RaftMessageCoding.encode(messages)
    }
}
