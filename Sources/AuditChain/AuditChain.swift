import BinaryCoding
import Sealing

/// The audit trail's hash chain, extended by the state machine itself: a transaction carries an
/// entry's body (`TransactionOperation.appendAudit`), and its apply gives the entry the next
/// sequence number, the log index and log time, and the hash of the entry before it, in the same
/// atomic step as the change the entry describes. Entries live at `<chain>/<seq>` (seq
/// big-endian, from 1) and the chain's head at `<chain>-head`.
public enum AuditChain {
    /// Bytes of one entry's body.
    public static let maxBodyBytes = 16 << 10
    static let domain = Array("crm.audit.v1".utf8)
    /// The `prev` of the first entry.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    public static func headKey(_ chain: [UInt8]) -> [UInt8] { chain + Array("-head".utf8) }

    /// The CRM's trail (relative to the CRM prefix): workspace 1, big-endian, then `/a`, as
    /// `AuditTrail` makes it (a test holds the two equal).
    public static let crmChain: [UInt8] = [0, 0, 0, 1] + Array("/a".utf8)

    /// The seq up to which checkpoints have checked the chain (the same on every member).
    public static func checkedKey(_ chain: [UInt8]) -> [UInt8] { chain + Array("-checked".utf8) }

    public static func entryPrefix(_ chain: [UInt8]) -> [UInt8] { chain + [UInt8(ascii: "/")] }

    /// Lower-case hex, as hashes and digests of the trail are shown.
    public static func hex(_ bytes: [UInt8]) -> String {
        String(bytes.flatMap { byte in [hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]] })
    }

    private static let hexDigits = Array("0123456789abcdef")

    public static func entryKey(_ chain: [UInt8], _ seq: UInt64) -> [UInt8] {
        var writer = BinaryWriter(capacity: chain.count + 9)
        writer.raw(entryPrefix(chain))
        writer.u64(seq)
        return writer.bytes
    }
}

/// The newest entry of a chain: its sequence number and hash.
public struct AuditHead: Equatable, Sendable {
    public var seq: UInt64
    public var hash: [UInt8]

    public static let empty = AuditHead(seq: 0, hash: AuditChain.genesis)

    public init(seq: UInt64, hash: [UInt8]) {
        precondition(hash.count == 32, "an audit hash is a SHA-256")
        self.seq = seq
        self.hash = hash
    }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: 40)
        writer.u64(seq)
        writer.raw(hash)
        return writer.bytes
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let seq = reader.u64(), let hash = reader.raw(32), reader.isAtEnd else { return nil }
        self.init(seq: seq, hash: hash)
    }
}

/// One entry of the chain as stored: what the apply added around the body, and the hash of it all.
public struct AuditLink: Equatable, Sendable {
    public var seq: UInt64
    public var logIndex: UInt64
    public var logTimeMillis: UInt64
    public var prev: [UInt8]
    public var body: [UInt8]
    public var hash: [UInt8]

    static let format: UInt8 = 1

    /// The entry after `head`, written by log entry `logIndex` at `logTimeMillis`.
    public static func next(after head: AuditHead, logIndex: UInt64, logTimeMillis: UInt64, body: [UInt8]) -> AuditLink
    {
        var link = AuditLink(
            seq: head.seq + 1, logIndex: logIndex, logTimeMillis: logTimeMillis, prev: head.hash, body: body, hash: [])
        link.hash = link.computedHash
        return link
    }

    /// SHA-256 of the domain, the sequence number, log index and time, the body and the hash of
    /// the entry before: changing, removing or moving any entry breaks every hash after it.
    public var computedHash: [UInt8] {
        var writer = BinaryWriter(capacity: AuditChain.domain.count + body.count + 64)
        writer.raw(AuditChain.domain)
        writer.u64(seq)
        writer.u64(logIndex)
        writer.u64(logTimeMillis)
        writer.blob(body)
        writer.raw(prev)
        return HMACSHA256.sha256(writer.bytes)
    }

    public var head: AuditHead { AuditHead(seq: seq, hash: hash) }

    public var encoded: [UInt8] {
        var writer = BinaryWriter(capacity: body.count + 96)
        writer.u8(Self.format)
        writer.u64(seq)
        writer.u64(logIndex)
        writer.u64(logTimeMillis)
        writer.raw(prev)
        writer.blob(body)
        writer.raw(hash)
        return writer.bytes
    }

    public init(
        seq: UInt64, logIndex: UInt64, logTimeMillis: UInt64, prev: [UInt8], body: [UInt8], hash: [UInt8]
    ) {
        self.seq = seq
        self.logIndex = logIndex
        self.logTimeMillis = logTimeMillis
        self.prev = prev
        self.body = body
        self.hash = hash
    }

    public init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let seq = reader.u64(), let index = reader.u64(), let time = reader.u64(),
            let prev = reader.raw(32), let body = reader.blob(limit: AuditChain.maxBodyBytes),
            let hash = reader.raw(32), reader.isAtEnd
        else { return nil }
        self.init(seq: seq, logIndex: index, logTimeMillis: time, prev: prev, body: body, hash: hash)
    }
}

/// Checks a run of entries the way `crmctl audit verify` does: each one decodes, is stored
/// under its own number, follows the one before without a gap, names its hash, and hashes to it.
public struct AuditVerifier: Sendable {
    public private(set) var checked = 0
    /// The last entry that held (its seq and hash): where the next must link.
    public private(set) var last: AuditHead
    /// The first entry that did not hold, and why (nil: none so far).
    public private(set) var problem: (seq: UInt64, why: String)?

    /// Starts at `base`: the head before the first entry to check (`.empty` from the start).
    public init(after base: AuditHead) { last = base }

    /// Checks the entry stored under `seq`; false (and `problem` set) at the first that fails.
    @discardableResult
    public mutating func check(seq: UInt64, _ link: AuditLink?) -> Bool {
        guard problem == nil else { return false }
        let expected = last.seq + 1
        guard let link else { return fail(seq, "entry \(seq) does not decode") }
        guard seq == expected else {
            return fail(
                expected, seq > expected ? "entries \(expected)…\(seq - 1) are missing" : "entry \(seq) is out of order"
            )
        }
        guard link.seq == seq else { return fail(seq, "entry \(seq) is stored under another number (\(link.seq))") }
        guard link.prev == last.hash else { return fail(seq, "entry \(seq) does not link to entry \(last.seq)") }
        guard link.computedHash == link.hash else { return fail(seq, "entry \(seq) does not match its hash") }
        last = link.head
        checked += 1
        return true
    }

    /// Checks that the run ended at `head`: nothing cut off after the last entry checked.
    public mutating func finish(at head: AuditHead) {
        guard problem == nil else { return }
        if head.seq > last.seq {
            _ = fail(last.seq + 1, "entries \(last.seq + 1)…\(head.seq) are missing (the head is \(head.seq))")
        } else if head != last {
            _ = fail(head.seq, "the head (\(head.seq)) does not match the last entry (\(last.seq))")
        }
    }

    private mutating func fail(_ seq: UInt64, _ why: String) -> Bool {
        problem = (seq, why)
        return false
    }
}

/// A checkpoint: the leader's signed statement that the chain's entry `seq` hashes to `hash`,
/// carried in an entry of the chain itself. Its signature is ECDSA P-256 / SHA-256 by the
/// member's TLS key, with the member's certificate, so that a verifier holding only the cluster
/// CA can tell it came from a member (`crmctl audit verify`).
public struct AuditCheckpoint: Equatable, Sendable {
    public var seq: UInt64
    public var hash: [UInt8]
    public var member: UInt64
    public var certificate: [UInt8]
    public var signature: [UInt8]

    public static let maxCertificateBytes = 4096
    public static let maxSignatureBytes = 160

    public init(seq: UInt64, hash: [UInt8], member: UInt64, certificate: [UInt8], signature: [UInt8]) {
        self.seq = seq
        self.hash = hash
        self.member = member
        self.certificate = certificate
        self.signature = signature
    }

    /// What is signed: a domain, the chain, the seq, the hash and the signing member.
    public static func signedBytes(chain: [UInt8], seq: UInt64, hash: [UInt8], member: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.blob(Array("crm.audit.checkpoint.v1".utf8))
        writer.blob(chain)
        writer.u64(seq)
        writer.raw(hash)
        writer.u64(member)
        return writer.bytes
    }

    public func write(_ writer: inout BinaryWriter) {
        writer.u64(seq)
        writer.raw(hash)
        writer.u64(member)
        writer.blob(certificate)
        writer.blob(signature)
    }

    /// The checkpoint an entry's body carries: the CRM's entries of format 2 hold one right
    /// after the format byte.
    public static func `in`(entryBody body: [UInt8]) -> AuditCheckpoint? {
        var reader = BinaryReader(body)
        guard reader.u8() == 2 else { return nil }
        return read(&reader)
    }

    public static func read(_ reader: inout BinaryReader) -> AuditCheckpoint? {
        guard let seq = reader.u64(), let hash = reader.raw(32), let member = reader.u64(),
            let certificate = reader.blob(limit: maxCertificateBytes),
            let signature = reader.blob(limit: maxSignatureBytes)
        else { return nil }
        return AuditCheckpoint(seq: seq, hash: hash, member: member, certificate: certificate, signature: signature)
    }
}
