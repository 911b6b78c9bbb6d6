import CRM
import CRMProto
import GRPCCore
import KVStore
import Raft

/// The audit entries of the reads a member serves, written to the trail in batches: while one
/// batch is being committed the next gathers, so that many reads share one proposal (group
/// commit). The leader proposes a batch itself; a follower hands it to the leader
/// (`Records.AppendAudit`). A read that must not release personal data before its entry is in
/// the trail waits for its batch; one whose entry cannot be written is refused UNAVAILABLE.
actor AuditRecorder {
    /// Entries waiting for a batch; beyond this a read is refused (the trail is not keeping up).
    static let maxQueued = 10_000
    /// Entries in one proposal (half the operations a transaction may hold).
    static let maxBatch = 256

    private let crm: CRMRecords
    private let members: MemberClients
    /// Whether reads releasing personal data wait for their entries (`crm.audit_reads: sync`).
    nonisolated let waitsForReads: Bool
    private var queue: [(entry: AuditEntry, waiter: CheckedContinuation<Void, any Error>?)] = []
    private var flushing = false

    init(crm: CRMRecords, members: MemberClients, waitsForReads: Bool) {
        self.crm = crm
        self.members = members
        self.waitsForReads = waitsForReads
    }

    /// Queues `entries`; with `wait`, returns once they have committed (or throws UNAVAILABLE).
    func record(_ entries: [AuditEntry], wait: Bool) async throws {
        guard !entries.isEmpty else { return }
        guard queue.count + entries.count <= Self.maxQueued else {
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
        if crm.isLeader {
            try await Self.propose(entries, crm)
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

    /// Proposes `entries` as one transaction on this member, which leads.
    static func propose(_ entries: [AuditEntry], _ crm: CRMRecords) async throws {
        precondition(entries.count <= maxBatch, "a batch fits one transaction")
        let transaction = Transaction(operations: entries.map(crm.trail.append))
        let caller = Caller(identity: .member(crm.engine.id))
        guard case .applied = try await crm.propose(transaction, caller: caller, audit: nil) else {
            throw RPCError(code: .internalError, message: "an audit batch has no condition, yet one failed")
        }
    }

    private static func reason(_ error: any Error) -> String {
        (error as? RPCError)?.message ?? "\(error)"
    }
}
