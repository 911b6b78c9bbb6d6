import CRM
import CRMProto
import GRPCCore
import Identity
import KVStore
import Raft

/// The audit entries of the reads a member serves, written to the trail in batches: while one
/// batch is being committed the next gathers, so that many reads share one proposal (group
/// commit). The leader proposes a batch itself; a follower hands it to the leader
/// (`Records.AppendAudit`). A read that must not release personal data before its entry is in
/// the trail waits for its batch; one whose entry cannot be written is refused UNAVAILABLE.
actor AuditRecorder {
    /// Entries waiting for a batch by default (`crm.audit_queue_entries`); beyond the bound a
    /// read is refused (the trail is not keeping up) and AUDIT_BACKLOG is raised.
    static let defaultQueueEntries = 10_000
    /// Entries in one proposal (half the operations a transaction may hold).
    static let maxBatch = 256

    private let crm: CRMRecords
    private let members: MemberClients
    /// Whether reads releasing personal data wait for their entries (`crm.audit_reads: sync`).
    nonisolated let waitsForReads: Bool
    /// The exfiltration guard's count (used while this member leads).
    nonisolated let subjects: SubjectCounter
    /// The queue's bound, fill and overflows, for the health monitor and `/metrics`.
    nonisolated let backlog: AuditBacklog
    private var queue: [(entry: AuditEntry, waiter: CheckedContinuation<Void, any Error>?)] = [] {
        didSet { backlog.queued(queue.count) }
    }
    private var flushing = false

    init(
        crm: CRMRecords, members: MemberClients, waitsForReads: Bool,
        maxSubjectsPerHour: Int = NodeConfig.CRM.defaultMaxSubjectsPerHour,
        backlog: AuditBacklog = AuditBacklog(capacity: AuditRecorder.defaultQueueEntries)
    ) {
        self.crm = crm
        self.members = members
        self.waitsForReads = waitsForReads
        self.backlog = backlog
        subjects = SubjectCounter(limit: maxSubjectsPerHour)
    }

    /// Queues `entries`; with `wait`, returns once they have committed (or throws UNAVAILABLE).
    func record(_ entries: [AuditEntry], wait: Bool) async throws {
        guard !entries.isEmpty else { return }
        guard queue.count + entries.count <= backlog.capacity else {
            backlog.refused(entries.count, now: WallClock.nowMillis())
            throw RPCError(
                code: .unavailable, message: "the audit trail is not keeping up; nothing was released, try again")
        }
        guard wait else {
            queue += entries.map { ($0, nil) }
            startFlushing()
            return
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue += entries.dropLast().map { ($0, nil) }
            queue.append((entries.last!, continuation))
            startFlushing()
        }
    }

    private func startFlushing() {
        guard !flushing else { return }
        flushing = true
        Task { await flush() }
    }

    /// Proposes batches until the queue is empty.
    private func flush() async {
        while !queue.isEmpty {
            let batch = Array(queue.prefix(Self.maxBatch))
            queue.removeFirst(batch.count)
            let result: Result<Void, any Error>
            do {
                try await append(batch.map(\.entry))
                result = .success(())
            } catch {
                result = .failure(
                    RPCError(
                        code: .unavailable,
                        message: "the audit trail cannot be written now (\(Self.reason(error))); nothing was released"))
            }
            for case let (_, waiter?) in batch { waiter.resume(with: result) }
        }
        flushing = false
    }

    private func append(_ entries: [AuditEntry]) async throws {
        if case let delay = FaultHooks.shared.auditAppendDelayMilliseconds, delay > 0 {
            try await Task.sleep(for: .milliseconds(delay))
        }
        if crm.isLeader {
            try await Self.propose(entries, crm, subjects)
            return
        }
        let leader = crm.leaderHint
        guard leader != 0 else { throw RPCError(code: .unavailable, message: "no leader") }
        var request = Crm_V1_AppendAuditRequest()
        request.bodies = entries.map { .init($0.encoded) }
        var options = CallOptions.defaults
        options.timeout = .seconds(5)
        _ = try await members.records(leader).appendAudit(request, options: options)
    }

    /// Proposes `entries` as one transaction on this member, which leads, with the holds (and
    /// their alerts) of users whose reads in it took them past the exfiltration guard's bound.
    static func propose(_ entries: [AuditEntry], _ crm: CRMRecords, _ subjects: SubjectCounter) async throws {
        precondition(entries.count <= maxBatch, "a batch fits one transaction")
        var transaction = Transaction(operations: entries.map(crm.trail.append))
        transaction.operations += try guarded(entries, crm, subjects)
        let caller = Caller(identity: .member(crm.engine.id))
        guard case .applied = try await crm.propose(transaction, caller: caller, audit: nil) else {
            throw RPCError(code: .internalError, message: "an audit batch has no condition, yet one failed")
        }
    }

    /// Users past the bound in one batch; the reads of further users in it go uncounted (the
    /// transaction's operations are bounded: three more for each).
    static let maxHoldsPerBatch = 64

    /// Counts the subjects whose personal fields `entries` released, per user; answers the
    /// operations that hold the reads of each user this batch took past the bound, alert the
    /// security administrators (an `al/` record) and audit it.
    private static func guarded(
        _ entries: [AuditEntry], _ crm: CRMRecords, _ subjects: SubjectCounter
    ) throws -> [TransactionOperation] {
        let now = crm.local.nowMillis()
        var personalFields: [EntityCode: Set<UInt16>] = [:]
        var operations: [TransactionOperation] = []
        var holds = 0
        let reads: Set<String> = ["record.read", "record.list", "record.lookup", "record.history"]
        for entry in entries where reads.contains(entry.action) && entry.outcome == .done && !entry.subjects.isEmpty {
            guard holds < maxHoldsPerBatch, let entity = entry.entity,
                let user = DirectoryChanges.user(ofOwner: entry.actor)
            else { continue }
            if personalFields[entity] == nil {
                personalFields[entity] = Set(try crm.changes.definition(entity).fields.filter(\.personal).map(\.id))
            }
            guard entry.fields.contains(where: { personalFields[entity]!.contains($0) }),
                subjects.count(entry.subjects, by: user, now: now)
            else { continue }
            holds += 1
            let detail = "personal data of more than \(subjects.limit) subjects within an hour"
            let alert = SecurityAlert(
                kind: .exfiltration, atMillis: now, user: user, application: entry.application,
                detail: detail)
            let audit = AuditEntry(
                action: "alert.exfiltration", actor: "crm://member/\(crm.engine.id)",
                application: entry.application, records: [user], reason: detail + "; personal reads stopped")
            let alerts = SecurityAlerts(kv: crm.changes.kv, workspace: crm.changes.workspace)
            operations += [
                ReadHolds(kv: crm.changes.kv, workspace: crm.changes.workspace).hold(
                    user, now: now, subjects: subjects.limit + 1),
                try alerts.raise(alert), crm.trail.append(audit),
            ]
        }
        return operations
    }

    private static func reason(_ error: any Error) -> String {
        (error as? RPCError)?.message ?? "\(error)"
    }
}
