import CRM
import CRMProto
import GRPCCore
import KVStore

/// The audit of reads and denials. A read's entry (who, through which application, which
/// records, data subjects and fields) is written before its answer leaves the member, and
/// waited for when the answer holds personal fields (`crm.audit_reads: sync`, the default). A
/// call a signed-in user is refused (no right, a record out of scope or missing, a field they
/// may not see) is recorded too, not waited for: the refusal releases nothing.
extension RecordsService {
    /// Runs `body` as `actor`; a refusal it throws is audited as `action` denied, then rethrown.
    func auditingDenials<T>(
        _ actor: Actor, _ action: String, _ entity: EntityCode?, _ ids: [CRMID] = [],
        _ body: () async throws -> T
    ) async throws -> T {
        do {
            return try await body()
        } catch {
            guard let reason = Self.denial(error) else { throw error }
            let entry = AuditEntry(
                action: action, actor: actor.owner, application: actor.application, entity: entity,
                records: Array(ids.prefix(AuditEntry.maxRecords)), outcome: .denied, reason: reason)
            try? await directory.audit.record([entry], wait: false) // a full queue is the only refusal
            throw error
        }
    }

    /// Why `error` refuses access (nil when it is not a refusal): no right, a record that is not
    /// there for this user, or a field they may not see (answered as one the entity lacks).
    static func denial(_ error: any Error) -> String? {
        switch error {
        case let error as RPCError where error.code == .permissionDenied: return error.message
        case RecordError.notFound: return "not found"
        case let error as RecordError:
            if case .unknownField = error { return error.description }
            return nil
        default: return nil
        }
    }

    func auditRead(
        _ action: String, _ actor: Actor, _ records: [VersionedRecord], fields: Set<String>,
        _ definition: EntityDefinition
    ) async throws {
        guard !records.isEmpty else { return }
        let names = fields.sorted()
        let personal = names.contains { definition.field(named: $0)?.personal == true }
        var subjects: [CRMID] = []
        for subject in records.compactMap(\.record.subject) where !subjects.contains(subject) {
            subjects.append(subject)
        }
        let entry = AuditEntry(
            action: action, actor: actor.owner, application: actor.application, entity: definition.code,
            records: records.map(\.record.id), subjects: subjects, fields: definition.ids(of: names))
        try await directory.audit.record([entry], wait: personal && directory.audit.waitsForReads)
    }

    /// A follower's batch of read entries, appended by the leader: members only.
    func appendAudit(
        request: ServerRequest<Crm_V1_AppendAuditRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_AppendAuditResponse> {
        guard case .member = try directory.authorization.requireClient(context) else {
            throw RPCError(code: .permissionDenied, message: "only members append audit entries")
        }
        guard crm.isLeader else { throw LocalKV.rpcError(.notLeader(leaderHint: crm.leaderHint)) }
        let bodies = request.message.bodies
        guard !bodies.isEmpty, bodies.count <= AuditRecorder.maxBatch else {
            throw RPCError(code: .invalidArgument, message: "a batch holds 1 to \(AuditRecorder.maxBatch) entries")
        }
        let entries = try bodies.map { body in
            guard let entry = AuditEntry(encoded: Array(body)) else {
                throw RPCError(code: .invalidArgument, message: "an audit entry does not decode")
            }
            return entry
        }
        try await AuditRecorder.propose(entries, crm, directory.audit.subjects)
        return ServerResponse(message: Crm_V1_AppendAuditResponse())
    }
}
