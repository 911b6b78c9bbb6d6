/// What `RaftNode.step` did with a peer's message.
public enum StepOutcome: Equatable, Sendable {
    /// Handled by the protocol (which includes ignoring a stale message, as Raft does).
    case handled
    /// Refused before it reached the protocol: no honest member sends such a message (a value
    /// out of range, entries that do not follow each other, a leader's message from a member
    /// that does not lead). Nothing changed; the caller logs `reason`.
    case refused(String)
}

/// Bounds on values that arrive from peers. Every index and term the core does arithmetic on
/// stays below `maxWireValue`, so `+ 1`, differences and `Int(...)` conversions cannot trap.
public enum MessageLimits {
    /// The largest index, term, commit or hint a peer may send (2^62: a cluster writing a
    /// million entries a second reaches it after 146,000 years).
    public static let maxWireValue: UInt64 = 1 << 62
    /// How far a message's term may be ahead of ours. An honest member raises its term by one
    /// per election timeout (about a second), so 2^32 is 136 years of back-to-back elections;
    /// a larger jump can only come from a broken or hostile peer and would poison our term.
    public static let maxTermJump: UInt64 = 1 << 32
}

extension RaftNode {
    /// Why `message` must not reach the protocol, or nil. Checks only the message itself and
    /// this member's state; it never changes anything.
    func refusal(of message: Message) -> String? {
        if let problem = Self.outOfRange(message) { return problem }
        if message.term > term && message.term - term > MessageLimits.maxTermJump {
            return "term \(message.term) is more than \(MessageLimits.maxTermJump) ahead of ours (\(term))"
        }
        switch message.kind {
        case .append:
            return refusal(ofAppend: message)
        case .propose:
            guard config.forwardProposals else {
                return "a forwarded proposal, though proposals are not forwarded here"
            }
            guard message.entries.allSatisfy({ $0.kind == .normal }) else {
                return "a forwarded proposal with a membership change"
            }
        case .appendResponse where message.term == term && role == .leader:
            // Within our term the log only grows: no follower can have more than we sent.
            guard message.index <= log.lastIndex else {
                return "acknowledges index \(message.index) beyond our last \(log.lastIndex)"
            }
            guard !message.reject || message.rejectHint <= message.index else {
                return "rejection hint \(message.rejectHint) above the rejected index \(message.index)"
            }
        case .heartbeatResponse where message.term == term && role == .leader:
            guard message.index <= leaseClock else {
                return "echoes lease clock \(message.index), ahead of ours (\(leaseClock))"
            }
        case .snapshot:
            guard let snapshot = message.snapshot else { return "a snapshot message without a snapshot" }
            guard snapshot.metadata.term <= message.term else {
                return "snapshot term \(snapshot.metadata.term) above the message's term"
            }
        case .vote, .preVote:
            guard message.logTerm <= message.term else {
                return "last log term \(message.logTerm) above the campaign's term"
            }
        default:
            break
        }
        return nil
    }

    /// Kinds only the leader of a term sends.
    static func onlyFromLeader(_ kind: Message.Kind) -> Bool {
        switch kind {
        case .append, .heartbeat, .snapshot, .timeoutNow, .readIndexResponse: return true
        default: return false
        }
    }

    /// Every number in the message is within `maxWireValue`.
    static func outOfRange(_ message: Message) -> String? {
        let limit = MessageLimits.maxWireValue
        var values = [message.term, message.logTerm, message.index, message.commit, message.rejectHint]
        if let metadata = message.snapshot?.metadata { values += [metadata.index, metadata.term] }
        if let last = message.entries.last { values += [last.index, last.term] }
        guard values.allSatisfy({ $0 <= limit }) else { return "a term, index or hint above \(limit)" }
        return nil
    }

    private func refusal(ofAppend message: Message) -> String? {
        guard message.logTerm <= message.term else {
            return "previous log term \(message.logTerm) above the message's term"
        }
        var expectedIndex = message.index + 1
        var previousTerm = message.logTerm
        for entry in message.entries {
            guard entry.index == expectedIndex else {
                return "entry \(entry.index) where \(expectedIndex) must follow (entries after \(message.index))"
            }
            guard entry.term >= previousTerm, entry.term <= message.term else {
                return
                    "entry \(entry.index) of term \(entry.term) out of order (previous \(previousTerm), message term \(message.term))"
            }
            expectedIndex += 1
            previousTerm = entry.term
        }
        return nil
    }
}
