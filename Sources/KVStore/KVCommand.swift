import BinaryCoding
import Raft

/// Limits on what a client may store, checked before a command is proposed and again when it
/// is applied (a command that breaks them is refused, never half-applied).
public enum KVLimits {
    public static let maxKeyBytes = 1024
    public static let maxValueBytes = 1 << 20
    public static let maxRangeLimit = 10_000
}

/// One write of a session: the session's id and the write's sequence number in it.
public struct SessionWrite: Hashable, Sendable {
    public var session: UInt64
    public var sequence: UInt64

    public init(session: UInt64, sequence: UInt64) {
        self.session = session
        self.sequence = sequence
    }
}

/// A write as clients ask for it.
public enum KVWrite: Equatable, Sendable {
    case put(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    /// Sets `new` (or deletes, when nil) if the current value is `expected` (nil: absent).
    case compareAndSwap(key: [UInt8], expected: [UInt8]?, new: [UInt8]?)

    public var key: [UInt8] {
        switch self {
        case .put(let key, _), .delete(let key), .compareAndSwap(let key, _, _): return key
        }
    }

    /// Why the write is refused, or nil.
    public var problem: String? {
        guard !key.isEmpty, key.count <= KVLimits.maxKeyBytes else {
            return "keys are 1 to \(KVLimits.maxKeyBytes) bytes; this one has \(key.count)"
        }
        let values: [[UInt8]?]
        switch self {
        case .put(_, let value): values = [value]
        case .delete: values = []
        case .compareAndSwap(_, let expected, let new): values = [expected, new]
        }
        for case let value? in values where value.count > KVLimits.maxValueBytes {
            return "values are at most \(KVLimits.maxValueBytes) bytes; this one has \(value.count)"
        }
        return nil
    }
}

/// What travels through the log: session management, or one write of a session.
///
/// Sessions give exactly-once writes across retries and leader changes (Raft thesis §6.3): a
/// client opens a session, numbers its writes 1, 2, 3, ... one at a time, and a write retried
/// with the same number is answered from the session instead of being applied again. A session
/// belongs to the identity that opened it (`owner`, its certificate's `crm://...` name): writes
/// and closes from any other identity are refused, so nobody can consume another client's
/// sequence numbers. Its id is drawn at random by the proposing leader (53 bits, so JSON clients
/// keep it exact), which also keeps ids from being guessed. `proposedAtMillis` is the proposer's
/// clock; the state machine only ever takes the maximum it has seen, so expiry is a function of
/// the log alone.
public enum KVCommand: Equatable, Sendable {
    /// `id` 0: the entry's log index (how version 1 numbered sessions, for entries it wrote).
    case openSession(id: UInt64 = 0, owner: String = "", proposedAtMillis: UInt64)
    case closeSession(session: UInt64, owner: String = "", proposedAtMillis: UInt64)
    case write(session: UInt64, sequence: UInt64, owner: String = "", proposedAtMillis: UInt64, KVWrite)
    /// Where member `id` is reached, recorded in the replicated state so that every member
    /// (and members added later) learns the addresses of members added at run time.
    case memberEndpoints(MemberAddresses)
    /// An atomic multi-key write to the CRM state (its own prefix, out of the KV API's reach),
    /// exactly once in a session like `write`.
    case transaction(session: UInt64, sequence: UInt64, owner: String, proposedAtMillis: UInt64, Transaction)

    /// Version 2 added session owners and random session ids; version 1 entries still decode
    /// (owner "", id = index).
    static let version: UInt8 = 2
    /// The highest command kind this member applies (5: transactions; 6: transactions that
    /// extend an audit chain; 7: transactions that also check a chain's head, checkpoints).
    /// Members report it, so that a kind is proposed only once every voter applies it.
    public static let highestKind: UInt8 = 7
    /// The kind of a transaction that extends an audit chain.
    public static let auditedTransactionKind: UInt8 = 6
    /// The kind of a transaction that checks an audit chain's head (an audit checkpoint).
    public static let checkpointTransactionKind: UInt8 = 7
    /// The session id of writes made without a session: applied every time they commit, so a
    /// retry after an unknown outcome may apply twice. Session ids are never 0.
    public static let noSession: UInt64 = 0
    /// Longest owner text (a `crm://client/<128 characters>` identity fits).
    public static let maxOwnerBytes = 256
    /// Session ids are below 2^53: exact in every JSON implementation.
    public static let sessionIDLimit: UInt64 = 1 << 53
    /// The longest encoding of a command a client's request can make: a compare-and-swap with
    /// the longest key, two values of the largest size and the longest owner, with every
    /// length and field around them (checked by a unit test).
    /// A transaction within its limits is shorter (checked by the same test).
    public static let maxEncodedBytes = KVLimits.maxKeyBytes + 2 * KVLimits.maxValueBytes + maxOwnerBytes + 64

    /// A fresh session id from the system's CSPRNG.
    public static func randomSessionID() -> UInt64 {
        var random = SystemRandomNumberGenerator()
        return UInt64.random(in: 1..<sessionIDLimit, using: &random)
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.version)
        switch self {
        case .openSession(let id, let owner, let time):
            writer.u8(1); writer.u64(time); writer.u64(id); writer.blob(Array(owner.utf8))
        case .closeSession(let session, let owner, let time):
            writer.u8(2); writer.u64(session); writer.u64(time); writer.blob(Array(owner.utf8))
        case .write(let session, let sequence, let owner, let time, let write):
            writer.u8(3); writer.u64(session); writer.u64(sequence); writer.u64(time)
            switch write {
            case .put(let key, let value):
                writer.u8(1); writer.blob(key); writer.blob(value)
            case .delete(let key):
                writer.u8(2); writer.blob(key)
            case .compareAndSwap(let key, let expected, let new):
                writer.u8(3); writer.blob(key); writer.optionalBlob(expected); writer.optionalBlob(new)
            }
            writer.blob(Array(owner.utf8))
        case .memberEndpoints(let addresses):
            writer.u8(4)
            addresses.write(into: &writer)
        case .transaction(let session, let sequence, let owner, let time, let transaction):
            writer.u8(transaction.commandKind)
            writer.u64(session); writer.u64(sequence); writer.u64(time)
            writer.blob(Array(owner.utf8))
            transaction.write(into: &writer)
        }
        return writer.bytes
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let version = reader.u8(), version == 1 || version == Self.version, let kind = reader.u8() else {
            return nil
        }
        func owner() -> String? {
            guard version >= 2 else { return "" }
            return reader.text(limit: Self.maxOwnerBytes)
        }
        switch kind {
        case 1:
            guard let time = reader.u64() else { return nil }
            var id: UInt64 = 0
            if version >= 2 {
                guard let drawn = reader.u64(), drawn < Self.sessionIDLimit else { return nil }
                id = drawn
            }
            guard let owner = owner() else { return nil }
            self = .openSession(id: id, owner: owner, proposedAtMillis: time)
        case 2:
            guard let session = reader.u64(), let time = reader.u64(), let owner = owner() else { return nil }
            self = .closeSession(session: session, owner: owner, proposedAtMillis: time)
        case 3:
            guard let session = reader.u64(), let sequence = reader.u64(), let time = reader.u64(),
                let writeKind = reader.u8(), let key = reader.blob()
            else { return nil }
            let write: KVWrite
            switch writeKind {
            case 1:
                guard let value = reader.blob() else { return nil }
                write = .put(key: key, value: value)
            case 2:
                write = .delete(key: key)
            case 3:
                guard let expected = reader.optionalBlob(), let new = reader.optionalBlob() else { return nil }
                write = .compareAndSwap(key: key, expected: expected, new: new)
            default:
                return nil
            }
            guard let owner = owner() else { return nil }
            self = .write(session: session, sequence: sequence, owner: owner, proposedAtMillis: time, write)
        case 4:
            guard let addresses = MemberAddresses(reading: &reader) else { return nil }
            self = .memberEndpoints(addresses)
        case 5, Self.auditedTransactionKind, Self.checkpointTransactionKind:
            guard version >= 2, let session = reader.u64(), let sequence = reader.u64(), let time = reader.u64(),
                let owner = owner(),
                let transaction = Transaction(
                    reading: &reader, auditAllowed: kind >= Self.auditedTransactionKind,
                    checkAllowed: kind == Self.checkpointTransactionKind),
                transaction.commandKind == kind
            else { return nil }
            self = .transaction(
                session: session, sequence: sequence, owner: owner, proposedAtMillis: time, transaction)
        default:
            return nil
        }
        guard reader.isAtEnd else { return nil }
    }

    /// Whether `bytes` look like a command of a later version than this member's (a newer
    /// format, or a kind above `highestKind`): such an entry is never skipped, since members
    /// that apply it would then hold another state than this one.
    public static func isNewer(_ bytes: [UInt8]) -> (format: UInt8, kind: UInt8)? {
        guard bytes.count >= 2 else { return nil }
        let (format, kind) = (bytes[0], bytes[1])
        guard format > version || (format == version && kind > highestKind) else { return nil }
        return (format, kind)
    }

    /// The write's session and sequence number, for writes in a session: unique among the
    /// session's writes, so it names one proposal (a retry is answered from the session).
    public var sessionWrite: SessionWrite? {
        switch self {
        case .write(let session, let sequence, _, _, _), .transaction(let session, let sequence, _, _, _):
            guard session != Self.noSession else { return nil }
            return SessionWrite(session: session, sequence: sequence)
        default:
            return nil
        }
    }

    /// The version 1 encoding, for tests of old log entries.
    var encodedAsVersion1: [UInt8]? {
        var writer = BinaryWriter()
        writer.u8(1)
        switch self {
        case .openSession(0, "", let time): writer.u8(1); writer.u64(time)
        case .closeSession(let session, "", let time): writer.u8(2); writer.u64(session); writer.u64(time)
        default: return nil
        }
        return writer.bytes
    }
}

/// A member's addresses as `host:port` texts.
public struct MemberAddresses: Equatable, Sendable {
    public var id: UInt64
    public var peer: String
    public var client: String
    public var admin: String

    public init(id: UInt64, peer: String, client: String, admin: String) {
        self.id = id
        self.peer = peer
        self.client = client
        self.admin = admin
    }

    static let maxAddressBytes = 256

    init?(reading reader: inout BinaryReader) {
        guard let id = reader.u64(), id != 0, let peer = reader.text(limit: Self.maxAddressBytes),
            let client = reader.text(limit: Self.maxAddressBytes), let admin = reader.text(limit: Self.maxAddressBytes)
        else { return nil }
        self.init(id: id, peer: peer, client: client, admin: admin)
    }

    func write(into writer: inout BinaryWriter) {
        writer.u64(id)
        writer.blob(Array(peer.utf8))
        writer.blob(Array(client.utf8))
        writer.blob(Array(admin.utf8))
    }

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        write(into: &writer)
        return writer.bytes
    }

    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        self.init(reading: &reader)
        guard reader.isAtEnd else { return nil }
    }
}

/// The outcome of applying one command, as the proposer reports it to its client.
public enum KVOutcome: Equatable, Sendable {
    /// A member's addresses were recorded.
    case memberRecorded
    case sessionOpened(UInt64)
    case sessionClosed
    case put
    case deleted(existed: Bool)
    case compareAndSwap(swapped: Bool)
    /// The session does not exist (never opened, closed, or expired): the write was not
    /// applied; whether an earlier attempt of it was is unknown to the client.
    case unknownSession
    /// A write numbered below the session's last: the client has already moved on.
    case superseded(last: UInt64)
    /// The write breaks a limit; nothing was applied.
    case refused(String)
    /// The session belongs to another identity: nothing was applied.
    case notSessionOwner
    /// A transaction's outcome.
    case transaction(TransactionOutcome)
}

/// What became of a transaction.
public enum TransactionOutcome: Equatable, Sendable, CustomStringConvertible {
    /// Every operation was applied; stamped values carry `version` (the entry's log index).
    case applied(version: UInt64)
    /// Condition number `condition` (from 0) did not hold, so nothing was applied; its key's
    /// version now (nil: absent or not stamped; for `keySet`, the key set in use).
    case conditionFailed(condition: Int, current: UInt64?)

    public var description: String {
        switch self {
        case .applied(let version): return "applied as v\(version)"
        case .conditionFailed(let condition, let current):
            return "condition \(condition) failed (now \(current.map { "v\($0)" } ?? "none"))"
        }
    }
}
