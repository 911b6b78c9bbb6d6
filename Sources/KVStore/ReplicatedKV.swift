import AuditChain
import BinaryCoding
import Logging
@_spi(Simulation) import Raft
import Storage
import Synchronization

/// The replicated key-value state machine on the storage engine: committed log entries go in,
/// in order; reads come out.
///
/// - Values live in `state_machine` under `k/<key>`, sessions under `s/<session id>`; the
///   applied index, its term and the log clock in `metadata`, written in the same atomic batch
///   as the changes they cover, so that after a crash the state and its applied index agree and
///   the log is replayed from there.
/// - Applies are written buffered (they survive a process crash; after a power loss RocksDB
///   rolls state and index back together and the synced log is replayed). Before the log is
///   compacted past an index, `syncApplied()` makes the state up to it durable.
/// - The same entries give the same state and outcomes on every member: nothing here reads a
///   clock, a random source or anything outside the log and the store.
///
/// Used from one thread (the node's apply loop); reads may come from any thread.
public final class ReplicatedKV: @unchecked Sendable {
    public struct Options: Sendable {
        public var maxSessions = 100_000
        /// Sessions one client identity may hold (the rest of the table stays for others).
        public var maxSessionsPerOwner = 1024
        /// Log time after which an idle session expires. Default 10 minutes.
        public var sessionIdleTimeoutMillis: UInt64 = 10 * 60 * 1000
        /// A bug to switch on, to show that the simulator finds it (see `PlantedBug`).
        @_spi(Simulation) public var plantedBug: PlantedBug?

        public init() {}
    }

    /// Where the state machine is in the log.
    public struct Position: Equatable, Sendable {
        public var index: UInt64
        public var term: UInt64
        /// The largest proposer clock applied so far.
        public var logClockMillis: UInt64

        public init(index: UInt64, term: UInt64, logClockMillis: UInt64) {
            self.index = index
            self.term = term
            self.logClockMillis = logClockMillis
        }
    }

    /// The sealed engine on a member; `MemoryStateStorage` in the simulator and unit tests.
    public let storage: any StateStorage
    let logger: Logger
    public private(set) var position: Position
    private var sessions: SessionTable
    /// Set when a write failed: the in-memory sessions may be ahead of the disk, so every
    /// later apply throws until the state machine is reopened (which reloads from disk).
    private var failure: (any Error)?
    /// Applies come from one thread (the node's Raft loop): checked in debug builds.
    public let applyThread = ThreadConfinement()
    let plantedBug: PlantedBug?
    /// Told when a checkpoint finds this member's audit chain differs from the one the
    /// checkpoint was made over (the seq and why): the member raises TAMPER.
    private let divergence = Mutex<(@Sendable (UInt64, String) -> Void)?>(nil)

    public func onAuditDivergence(_ report: @escaping @Sendable (UInt64, String) -> Void) {
        divergence.withLock { $0 = report }
    }

    func reportDivergence(seq: UInt64, _ why: String) {
        logger.critical(
            "this member's audit trail differs from the cluster's", metadata: ["seq": "\(seq)", "why": "\(why)"])
        divergence.withLock { $0 }?(seq, why)
    }

    /// Opens the state machine on `storage`, loading its position and sessions.
    public init(
        storage: any StateStorage, options: Options = Options(), logger: Logger = Logger(label: "crm.kv")
    ) throws {
        self.storage = storage
        self.logger = logger
        plantedBug = options.plantedBug
        position = try Self.loadPosition(storage)
        sessions = SessionTable(
            capacity: options.maxSessions, idleTimeoutMillis: options.sessionIdleTimeoutMillis,
            capacityPerOwner: options.maxSessionsPerOwner)
        try loadSessions()
    }

    public var appliedIndex: UInt64 { position.index }
    public var sessionCount: Int { sessions.count }

    // MARK: - Reads

    /// The value at `key`, or nil. Linearizable once the caller has waited for the read index.
    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        try storage.get(.stateMachine, StateKeys.value(key))
    }

    /// Keys in [from, to) in order (to nil: to the end), at most `limit`; `more` says whether
    /// the range holds further keys.
    public func range(
        from: [UInt8], to: [UInt8]?, limit: Int
    ) throws -> (pairs: [(key: [UInt8], value: [UInt8])], more: Bool) {
        precondition(limit >= 1 && limit <= KVLimits.maxRangeLimit, "range limit \(limit)")
        let upper = to.map(StateKeys.value) ?? KeyEncoding.prefixEnd(StateKeys.valuePrefix)
        guard upper.map({ StateKeys.value(from).lexicographicallyPrecedes($0) }) ?? true else { return ([], false) }
        let page = try storage.scan(.stateMachine, KeyRange(from: StateKeys.value(from), to: upper), limit: limit)
        let pairs = page.entries.map { (key: Array($0.key.dropFirst(StateKeys.valuePrefix.count)), value: $0.value) }
        return (pairs, page.resume != nil)
    }

    // MARK: - Applying

    /// One applied entry's outcome, for the member that proposed it.
    public struct Applied: Equatable, Sendable {
        public var index: UInt64
        public var outcome: KVOutcome
        /// The session write the entry held, if any: how a member that forwarded a proposal to
        /// the leader recognizes it when it is applied.
        public var sessionWrite: SessionWrite? = nil
    }

    /// Applies committed entries, in order, in one atomic write. Entries at or below the applied
    /// index (replayed after a restart) are skipped. Returns the outcome of each command.
    public func apply(_ entries: [Entry]) throws -> [Applied] {
        assert(applyThread.isOwner, "the state machine is applied from more than one thread")
        if let failure { throw failure }
        var pending = PendingApply(position: position)
        var results: [Applied] = []
        for entry in entries where entry.index > pending.position.index {
            precondition(
                entry.index == pending.position.index + 1,
                "applying entry \(entry.index) after \(pending.position.index)")
            pending.position.index = entry.index
            pending.position.term = entry.term
            guard entry.kind == .normal, !entry.data.isEmpty else { continue }
            guard let command = KVCommand(encoded: entry.data) else {
                if let newer = KVCommand.isNewer(entry.data) {
                    throw KVApplyError.commandTooNew(index: entry.index, format: newer.format, kind: newer.kind)
                }
                results.append(
                    Applied(index: entry.index, outcome: .refused("entry \(entry.index) is not a KV command")))
                continue
            }
            let outcome = try execute(command, entry: entry, into: &pending)
            results.append(Applied(index: entry.index, outcome: outcome, sessionWrite: command.sessionWrite))
            if pending.batch.count >= Self.maxOperationsPerBatch || pending.batch.payloadBytes >= Self.maxBatchBytes {
                try commit(&pending)
            }
        }
        try commit(&pending)
        return results
    }

    /// Makes everything applied so far durable (synced), e.g. before compacting the log.
    public func syncApplied() throws {
        var batch = WriteBatch()
        batch.put(.metadata, key: StateKeys.position, value: Self.encode(position))
        try storage.write(batch, durability: .synced)
    }

    static let maxOperationsPerBatch = 50_000
    static let maxBatchBytes = 128 << 20

    private func commit(_ pending: inout PendingApply) throws {
        guard pending.position != position else { return }
        pending.batch.put(.metadata, key: StateKeys.position, value: Self.encode(pending.position))
        do {
            try storage.write(pending.batch, durability: .buffered)
        } catch {
            failure = error
            logger.error(
                "kv apply write failed; reopen to recover",
                metadata: ["index": "\(pending.position.index)", "error": "\(error)"])
            throw error
        }
        position = pending.position
        pending.batch = WriteBatch()
        pending.overlay = [:]
    }

    private func execute(_ command: KVCommand, entry: Entry, into pending: inout PendingApply) throws -> KVOutcome {
        switch command {
        case .openSession(let drawn, let owner, let time):
            pending.advanceClock(time)
            let id = drawn == 0 ? entry.index : drawn
            guard sessions[id] == nil else { return .refused("session id \(id) is in use; open another") }
            // The owner's own oldest sessions make room first, so one client cannot push out the others'.
            for replaced in sessions.overQuota(owner) { remove(session: replaced, from: &pending) }
            for expired in sessions.evict(now: pending.position.logClockMillis, room: 1) {
                pending.batch.delete(.stateMachine, key: StateKeys.session(expired))
            }
            let session = SessionTable.Session(
                owner: owner, lastSequence: 0, lastOutcome: nil, activeAtIndex: entry.index,
                activeAtMillis: pending.position.logClockMillis)
            store(session, id: id, into: &pending)
            return .sessionOpened(id)
        case .closeSession(let id, let owner, let time):
            pending.advanceClock(time)
            expireIdle(&pending)
            guard let session = sessions[id] else { return .unknownSession }
            guard session.owner == owner else { return .notSessionOwner }
            remove(session: id, from: &pending)
            return .sessionClosed
        case .memberEndpoints(let addresses):
            pending.batch.put(.stateMachine, key: StateKeys.member(addresses.id), value: addresses.encoded)
            return .memberRecorded
        case .write(let id, let sequence, let owner, let time, let write):
            pending.advanceClock(time)
            expireIdle(&pending)
            return try inSession(id, sequence: sequence, owner: owner, entry: entry, into: &pending) {
                try perform(write, into: &$0)
            }
        case .transaction(let id, let sequence, let owner, let time, let transaction):
            pending.advanceClock(time)
            expireIdle(&pending)
            return try inSession(id, sequence: sequence, owner: owner, entry: entry, into: &pending) {
                try perform(transaction, index: entry.index, into: &$0)
            }
        }
    }

    /// Runs a write once in its session: a retry of the session's last write is answered with
    /// its recorded outcome, an older one is refused. Session 0 writes are applied every time.
    private func inSession(
        _ id: UInt64, sequence: UInt64, owner: String, entry: Entry, into pending: inout PendingApply,
        _ write: (inout PendingApply) throws -> KVOutcome
    ) throws -> KVOutcome {
        if id == KVCommand.noSession { return try write(&pending) }
        guard var session = sessions[id] else { return .unknownSession }
        // Checked before the sequence: another identity must not even learn the session's number.
        guard session.owner == owner else { return .notSessionOwner }
        if sequence == session.lastSequence, let outcome = session.lastOutcome { return outcome }
        guard sequence > session.lastSequence else { return .superseded(last: session.lastSequence) }
        let outcome = try write(&pending)
        session.lastSequence = sequence
        session.lastOutcome = outcome
        session.activeAtIndex = entry.index
        session.activeAtMillis = pending.position.logClockMillis
        store(session, id: id, into: &pending)
        return outcome
    }

    private func remove(session id: UInt64, from pending: inout PendingApply) {
        sessions.remove(id)
        pending.batch.delete(.stateMachine, key: StateKeys.session(id))
    }

    private func expireIdle(_ pending: inout PendingApply) {
        for expired in sessions.evict(now: pending.position.logClockMillis) {
            pending.batch.delete(.stateMachine, key: StateKeys.session(expired))
        }
    }

    private func store(_ session: SessionTable.Session, id: UInt64, into pending: inout PendingApply) {
        sessions.record(id, session)
        pending.batch.put(.stateMachine, key: StateKeys.session(id), value: SessionCoding.encode(session))
    }

    private func perform(_ write: KVWrite, into pending: inout PendingApply) throws -> KVOutcome {
        if let problem = write.problem { return .refused(problem) }
        let key = StateKeys.value(write.key)
        switch write {
        case .put(_, let value):
            pending.set(key, value)
            return .put
        case .delete:
            let existed = try pending.read(key, storage) != nil
            if existed { pending.set(key, nil) }
            return .deleted(existed: existed)
        case .compareAndSwap(_, let expected, let new):
            guard try pending.read(key, storage) == expected else { return .compareAndSwap(swapped: false) }
            pending.set(key, new)
            return .compareAndSwap(swapped: true)
        }
    }

    /// Member addresses recorded through the log (members added at run time).
    public func memberDirectory() throws -> [UInt64: MemberAddresses] {
        var directory: [UInt64: MemberAddresses] = [:]
        var range = KeyRange.prefix(StateKeys.memberPrefix)
        while true {
            let page = try storage.scan(.stateMachine, range, limit: 1024)
            for item in page.entries {
                guard let addresses = MemberAddresses(encoded: item.value) else {
                    throw StorageError.corruption(
                        family: .stateMachine, key: item.key, message: "a member address record does not decode")
                }
                directory[addresses.id] = addresses
            }
            guard let resume = page.resume else { break }
            range = resume
        }
        return directory
    }

    // MARK: - Loading

    private static func loadPosition(_ storage: any StateStorage) throws -> Position {
        guard let bytes = try storage.get(.metadata, StateKeys.position) else {
            return Position(index: 0, term: 0, logClockMillis: 0)
        }
        return try decodePosition(bytes)
    }

    static func decodePosition(_ bytes: [UInt8]) throws -> Position {
        var reader = BinaryReader(bytes)
        guard let index = reader.u64(), let term = reader.u64(), let clock = reader.u64(), reader.isAtEnd else {
            throw StorageError.corruption(
                family: .metadata, key: StateKeys.position, message: "the applied position does not decode")
        }
        return Position(index: index, term: term, logClockMillis: clock)
    }

    /// Reloads position and sessions from disk (after a restore), and clears a write failure.
    func reload() throws {
        position = try Self.loadPosition(storage)
        sessions = SessionTable(
            capacity: sessions.capacity, idleTimeoutMillis: sessions.idleTimeoutMillis,
            capacityPerOwner: sessions.capacityPerOwner)
        try loadSessions()
        failure = nil
    }

    private func loadSessions() throws {
        var range = KeyRange.prefix(StateKeys.sessionPrefix)
        while true {
            let page = try storage.scan(.stateMachine, range, limit: 4096)
            for item in page.entries {
                guard item.key.count == StateKeys.sessionPrefix.count + 8,
                    let session = SessionCoding.decode(item.value)
                else {
                    throw StorageError.corruption(
                        family: .stateMachine, key: item.key, message: "a session record does not decode")
                }
                let id = item.key.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                sessions.record(id, session)
            }
            guard let resume = page.resume else { break }
            range = resume
        }
        logger.info(
            "kv state machine opened", metadata: ["applied": "\(position.index)", "sessions": "\(sessions.count)"])
    }

    static func encode(_ position: Position) -> [UInt8] {
        var writer = BinaryWriter()
        writer.u64(position.index)
        writer.u64(position.term)
        writer.u64(position.logClockMillis)
        return writer.bytes
    }
}

/// Why the state machine stops applying the log.
public enum KVApplyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The entry was written by a newer member: applying around it would diverge.
    case commandTooNew(index: UInt64, format: UInt8, kind: UInt8)

    public var description: String {
        switch self {
        case .commandTooNew(let index, let format, let kind):
            return "log entry \(index) holds a command of format \(format), kind \(kind), newer than this member "
                + "applies (format \(KVCommand.version), kinds up to \(KVCommand.highestKind)); it stops applying: "
                + "upgrade its crm-node to the version the other members run"
        }
    }
}

/// The changes of one apply call before they are written: the batch, and the values it sets,
/// so that later commands in the same call read them.
struct PendingApply {
    var position: ReplicatedKV.Position
    var batch = WriteBatch()
    var overlay: [[UInt8]: [UInt8]?] = [:]

    mutating func advanceClock(_ proposed: UInt64) {
        position.logClockMillis = max(position.logClockMillis, proposed)
    }

    mutating func set(_ key: [UInt8], _ value: [UInt8]?) {
        overlay[key] = .some(value)
        if let value { batch.put(.stateMachine, key: key, value: value) } else { batch.delete(.stateMachine, key: key) }
    }

    func read(_ key: [UInt8], _ storage: any StateStorage) throws -> [UInt8]? {
        if let pending = overlay[key] { return pending }
        return try storage.get(.stateMachine, key)
    }
}

/// Keys of the KV state machine.
/// The parts of the state a logical backup takes (absolute keys): the CRM's state and the KV
/// API's values; never sessions or member addresses.
public enum BackedUpState {
    public static let crm = CRMKeys.prefix
    public static let kvValues = StateKeys.valuePrefix
    /// In key order.
    public static let prefixes = [crm, kvValues]
}

enum StateKeys {
    static let valuePrefix = Array("k/".utf8)
    static let sessionPrefix = Array("s/".utf8)
    static let memberPrefix = Array("m/".utf8)
    /// Every prefix the state machine writes under (snapshots and digests cover them all).
    static let allPrefixes = [valuePrefix, sessionPrefix, memberPrefix, CRMKeys.prefix]
    static let position = Array("kv-applied".utf8)

    static func value(_ key: [UInt8]) -> [UInt8] { valuePrefix + key }
    static func session(_ id: UInt64) -> [UInt8] { sessionPrefix + KeyEncoding.bigEndian(id) }
    static func member(_ id: UInt64) -> [UInt8] { memberPrefix + KeyEncoding.bigEndian(id) }
}

/// Session records: a format byte, last sequence, activity index and time, the owner, then the
/// last outcome. Records written before owners existed (no format byte, no owner) still decode,
/// with owner "".
enum SessionCoding {
    /// No version-1 record starts with it (its first byte is the high byte of a sequence number).
    static let format: UInt8 = 0xC5

    static func encode(_ session: SessionTable.Session) -> [UInt8] {
        var writer = BinaryWriter()
        writer.u8(format)
        writer.u64(session.lastSequence)
        writer.u64(session.activeAtIndex)
        writer.u64(session.activeAtMillis)
        writer.blob(Array(session.owner.utf8))
        switch session.lastOutcome {
        case nil: writer.u8(0)
        case .put?: writer.u8(1)
        case .deleted(let existed)?: writer.u8(existed ? 3 : 2)
        case .compareAndSwap(let swapped)?: writer.u8(swapped ? 5 : 4)
        case .refused(let why)?: writer.u8(6); writer.blob(Array(why.utf8))
        case .transaction(.applied(let version))?: writer.u8(7); writer.u64(version)
        case .transaction(.conditionFailed(let condition, let current))?:
            writer.u8(8); writer.u16(UInt16(condition)); writer.bool(current != nil); writer.u64(current ?? 0)
        case .sessionOpened?, .sessionClosed?, .unknownSession?, .superseded?, .memberRecorded?, .notSessionOwner?:
            preconditionFailure("not a write outcome")
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) -> SessionTable.Session? {
        var reader = BinaryReader(bytes)
        let current = bytes.first == format
        if current { _ = reader.u8() }
        guard let sequence = reader.u64(), let index = reader.u64(), let time = reader.u64() else { return nil }
        var owner = ""
        if current {
            guard let text = reader.text(limit: KVCommand.maxOwnerBytes) else { return nil }
            owner = text
        }
        guard let code = reader.u8() else { return nil }
        let outcome: KVOutcome?
        switch code {
        case 0: outcome = nil
        case 1: outcome = .put
        case 2, 3: outcome = .deleted(existed: code == 3)
        case 4, 5: outcome = .compareAndSwap(swapped: code == 5)
        case 6:
            guard let why = reader.text() else { return nil }
            outcome = .refused(why)
        case 7:
            guard let version = reader.u64() else { return nil }
            outcome = .transaction(.applied(version: version))
        case 8:
            guard let condition = reader.u16(), Int(condition) < TransactionLimits.maxConditions,
                let known = reader.bool(), let current = reader.u64()
            else { return nil }
            outcome = .transaction(.conditionFailed(condition: Int(condition), current: known ? current : nil))
        default: return nil
        }
        guard reader.isAtEnd else { return nil }
        return SessionTable.Session(
            owner: owner, lastSequence: sequence, lastOutcome: outcome, activeAtIndex: index, activeAtMillis: time)
    }
}

extension ReplicatedKV {
    /// For drills and tests only (debug builds call it through an injected fault): changes one
    /// byte of the body of entry `seq` of `chain` in this member's store, leaving its hash, as
    /// someone editing the files would. Answers whether the entry was there.
    public func tamperWithAuditEntry(chain: [UInt8], seq: UInt64) throws -> Bool {
        let key = CRMKeys.absolute(AuditChain.entryKey(chain, seq))
        guard let stored = try storage.get(.stateMachine, key) else { return false }
        var value = try CRMValue.decode(stored, key: key)
        guard var link = AuditLink(encoded: value.payload), !link.body.isEmpty else { return false }
        link.body[link.body.count - 1] ^= 0x01
        value.payload = link.encoded
        var batch = WriteBatch()
        batch.put(.stateMachine, key: key, value: value.stored)
        try storage.write(batch, durability: .synced)
        logger.warning("an audit entry was changed by an injected fault", metadata: ["seq": "\(seq)"])
        return true
    }
}
