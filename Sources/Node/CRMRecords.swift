import AuditChain
import CRM
import CRMProto
import Engine
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KVStore
import Logging
import Raft
import Sealing

/// The CRM on a member: its keys, the records it reads, and the transactions it proposes as
/// leader (made here: ids, subject keys, ciphertexts and tokens never come from the log).
struct CRMRecords: Sendable {
    let engine: RaftEngine
    let keys: CRMKeyState
    let changes: RecordChanges
    /// The workspace's audit trail, extended by the transactions proposed here.
    let trail: AuditTrail
    let local: LocalKV
    let routing: SharedRoutingTable
    let logger: Logger

    init(engine: RaftEngine, keys: CRMKeyState, local: LocalKV, routing: SharedRoutingTable, logger: Logger) {
        self.engine = engine
        self.keys = keys
        changes = RecordChanges(keys: keys, kv: engine.kv)
        trail = AuditTrail(kv: engine.kv)
        self.local = local
        self.routing = routing
        self.logger = logger
    }

    /// The key-encryption key from `crm.key_file`, or why there is none.
    static func keyEncryptionKey(_ config: NodeConfig) -> Result<any MasterKeyProvider, CRMKeyError> {
        guard let path = config.crm?.keyFile else {
            return .failure(.keyUnavailable("this member has no crm.key_file in its config"))
        }
        do {
            return .success(try FileMasterKeyProvider(path: path))
        } catch {
            return .failure(.keyUnavailable("crm.key_file: \(error)"))
        }
    }

    /// Refuses a CRM call this member cannot serve: its data gate (CORRUPT, storage failure),
    /// a key that differs from the cluster's (CRMKEY), or no usable key.
    func checkServing() throws {
        if let refusal = local.gate().refusal { throw refusal }
        guard let problem = keys.problem() else { return }
        throw Self.rpcError(problem)
    }

    static func rpcError(_ problem: CRMKeyError) -> RPCError {
        var metadata = Metadata()
        switch problem {
        case .wrongKey, .keySetDamaged:
            metadata.addString("CRMKEY", forKey: RefusalMetadata.alarm)
            metadata.addString(RefusalMetadata.notServing, forKey: RefusalMetadata.refused)
            return RPCError(code: .dataLoss, message: "\(problem); use another member", metadata: metadata)
        case .keyUnavailable, .unknownKeySet:
            metadata.addString("1", forKey: RefusalMetadata.refused)
            return RPCError(code: .unavailable, message: problem.description, metadata: metadata)
        case .doesNotOpen:
            return RPCError(code: .dataLoss, message: problem.description)
        }
    }

    static func rpcError(_ error: RecordError) -> RPCError {
        switch error {
        case .unknownField, .invalid, .tooLarge, .badRequest, .badPageToken:
            return RPCError(code: .invalidArgument, message: error.description)
        case .notFound: return RPCError(code: .notFound, message: error.description)
        case .versionMismatch(let current):
            return RPCError(
                code: .aborted, message: error.description, metadata: ["crm-current-version": "\(current)"])
        case .keys(let problem): return rpcError(problem)
        }
    }

    /// Runs `body`, turning CRM errors into gRPC statuses.
    func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RecordError {
            throw Self.rpcError(error)
        } catch let error as CRMKeyError {
            throw Self.rpcError(error)
        } catch let error as FieldError {
            throw RPCError(code: .invalidArgument, message: error.description)
        } catch let error as EngineError {
            throw LocalKV.rpcError(error)
        }
    }

    /// Waits until this member may read linearizably (unless the caller asked for less).
    func waitForRead(serializable: Bool) async throws {
        guard !serializable else { return }
        do {
            try await engine.waitForLinearizableRead()
        } catch let error as EngineError {
            throw LocalKV.rpcError(error)
        }
    }

    // MARK: Proposing (leader)

    /// Proposes `transaction` on this member, which must lead, with `audit` (when given)
    /// appended to the audit trail in the same atomic step: no change without its entry.
    ///
    /// The CRM's first transaction waits until every member has reported that it applies
    /// transactions, and the first audited one until every member applies those; once the CRM
    /// has a key set (an audit head) the cluster is past that point (a member that rejoins with
    /// an older binary stops at the first entry it cannot apply instead of diverging).
    func propose(_ transaction: Transaction, caller: Caller, audit: AuditEntry?) async throws -> TransactionOutcome {
        var transaction = transaction
        if let audit { transaction.operations.append(trail.append(audit)) }
        let kind = transaction.commandKind
        let past =
            kind == 5
            ? try keys.versionInUse() > 0
            : kind == KVCommand.auditedTransactionKind ? try trail.head().seq > 0 : try trail.checked() > 0
        let behind = past ? [] : routing.withLock { $0.membersNotApplying(kind: kind) }
        guard behind.isEmpty else {
            throw RPCError(
                code: .failedPrecondition,
                message:
                    "members \(behind.map(String.init).joined(separator: ", ")) have not reported applying CRM transactions "
                    + "(command kind \(kind)); upgrade them, or try again once they have reported")
        }
        let command = KVCommand.transaction(
            session: KVCommand.noSession, sequence: 0, owner: caller.owner, proposedAtMillis: local.nowMillis(),
            transaction)
        let result = try await engine.propose(command.encoded)
        switch result.outcome {
        case .transaction(let outcome)?: return outcome
        case .refused(let why)?: throw RPCError(code: .invalidArgument, message: why)
        default:
            throw RPCError(
                code: .internalError, message: "the transaction was answered \(String(describing: result.outcome))")
        }
    }

    /// Creates key set 1 if the CRM has none (the first write after the cluster starts).
    func ensureKeySet(caller: Caller) async throws {
        guard try keys.versionInUse() == 0 else { return }
        let (transaction, _) = try KeySetChanges.first(kek: try keys.keyEncryptionKey())
        switch try await propose(transaction, caller: caller, audit: caller.audit("keys.create")) {
        case .applied: logger.notice("the CRM key set is created (version 1)")
        case .conditionFailed: break // another proposal made it first
        }
    }

    // MARK: Key-set rotation (leader)

    /// Puts a new key set in use; the re-wrap job it starts is run by `rewrapStep`.
    func rotateKeySet(caller: Caller) async throws {
        guard isLeader else { throw LocalKV.rpcError(.notLeader(leaderHint: leaderHint)) }
        try checkServing()
        guard let current = try keys.inUse() else {
            throw RPCError(code: .failedPrecondition, message: "the CRM has no key set yet; its first write makes one")
        }
        if try RewrapJob.current(in: engine.kv) != nil {
            throw RPCError(
                code: .failedPrecondition,
                message: "the re-wrap after the last rotation is still running; rotate again when it is done")
        }
        let (transaction, set) = try KeySetChanges.rotation(from: current, kek: try keys.keyEncryptionKey())
        switch try await propose(
            transaction, caller: caller, audit: caller.audit("keys.rotate", reason: "key set \(set.version)"))
        {
        case .applied:
            logger.notice(
                "CRM key set rotated", metadata: ["version": "\(set.version)", "by": "\(caller.owner)"])
        case .conditionFailed:
            throw RPCError(code: .aborted, message: "the key set changed meanwhile; look at its status and try again")
        }
    }

    /// Batches of the re-wrap job run by the leader, at most `maxBatches` a call; a new leader
    /// resumes from the cursor the last batch saved.
    func rewrapStep(maxBatches: Int = 64) async {
        for _ in 0..<maxBatches {
            guard isLeader, keys.problem() == nil, local.gate().refusal == nil else { return }
            do {
                guard let (job, version) = try RewrapJob.current(in: engine.kv) else { return }
                let batch = try job.nextBatch(jobVersion: version, kv: engine.kv, keys: keys)
                let caller = Caller(identity: .member(engine.id))
                if case .conditionFailed = try await propose(batch, caller: caller, audit: nil) { continue }
                if try RewrapJob.current(in: engine.kv) == nil {
                    logger.notice("CRM re-wrap done; the old key set is retired", metadata: ["version": "\(job.to)"])
                }
            } catch {
                logger.warning("CRM re-wrap batch failed; retrying later", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    var isLeader: Bool { engine.currentStatus.role == .leader }
    var leaderHint: NodeID { engine.currentStatus.leader }
}

extension Caller {
    /// An audit entry for what this caller did as itself (an operator's tool, an application, or
    /// a member for the cluster).
    func audit(_ action: String, records: [CRMID] = [], reason: String = "") -> AuditEntry {
        AuditEntry(action: action, actor: owner, application: owner, records: records, reason: reason)
    }
}
