import AuditChain
import CRM
import CRMProto
import Foundation
import GRPCCore
import Identity

/// Pruning the audit trail: a person's act, not an operator tool's (the permission audit.prune
/// and a fresh second factor), bounded by what every collector holds and what checkpoints
/// checked, and itself an entry of the trail it shortens.
extension DirectoryService {
    func pruneAudit(
        request: ServerRequest<Crm_V1_PruneAuditRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_PruneAuditResponse> {
        ServerResponse(
            message: try await pruneAudit(request.message, try admit(request.metadata, context), request.metadata))
    }

    func pruneAudit(
        _ message: Crm_V1_PruneAuditRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_PruneAuditResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.pruneAudit(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .auditPrune, stepUp: true)
            let retention = AuditRetention(trail: crm.trail)
            var response = Crm_V1_PruneAuditResponse()
            guard let plan = try retention.plan(below: message.belowSeq) else {
                response.baseSeq = try retention.base().head.seq
                response.allowedBelowSeq = try retention.allowedBelow()
                return response
            }
            guard let hash = try retention.hash(of: plan.to) else {
                throw RPCError(code: .dataLoss, message: "entry \(plan.to) of the audit trail is missing or damaged")
            }
            let allowed = plan.allowed
            let entry = AuditEntry(
                action: "audit.prune", actor: DirectoryChanges.owner(of: checked.session.user),
                application: caller.owner,
                reason:
                    "entries \(plan.from)-\(plan.to) removed; the chain starts after \(plan.to) (\(AuditChain.hex(hash))); collectors and checkpoints allowed below \(allowed)"
            )
            let transaction = retention.prune(
                from: plan.from, to: AuditHead(seq: plan.to, hash: hash), baseVersion: plan.version, entry: entry)
            guard case .applied = try await crm.propose(transaction, caller: caller, audit: nil) else {
                throw RPCError(code: .aborted, message: "the trail was pruned meanwhile; try again")
            }
            response.fromSeq = plan.from
            response.toSeq = plan.to
            response.baseSeq = plan.to
            response.allowedBelowSeq = allowed
            return response
        }
    }
}
