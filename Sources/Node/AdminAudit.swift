import AuditChain
import CRM
import CRMProto
import GRPCCore
import KVStore

/// The audit trail as this member holds it, for `crmctl audit head|tail|verify`: each entry as
/// stored (a verifier re-hashes those bytes, not this member's reading of them) and read for
/// people beside it.
extension AdminService {
    static let maxAuditPage = 1000

    func auditHead(request: Crm_V1_AuditHeadRequest, context: ServerContext) async throws -> Crm_V1_AuditHeadResponse {
        _ = try authorization.requireAdmin(context)
        let kv = engine.kv
        let (head, applied) = try await offload { (try AuditTrail(kv: kv).head(), kv.appliedIndex) }
        var response = Crm_V1_AuditHeadResponse()
        response.seq = head.seq
        response.hash = .init(head.hash)
        response.appliedIndex = applied
        return response
    }

    func auditEntries(
        request: Crm_V1_AuditEntriesRequest, context: ServerContext
    ) async throws -> Crm_V1_AuditEntriesResponse {
        _ = try authorization.requireAdmin(context)
        guard request.fromSeq >= 1 else { throw RPCError(code: .invalidArgument, message: "`from_seq` starts at 1") }
        guard request.limit <= Self.maxAuditPage else {
            throw RPCError(code: .invalidArgument, message: "`limit` is at most \(Self.maxAuditPage)")
        }
        let limit = request.limit == 0 ? Self.maxAuditPage : Int(request.limit)
        let kv = engine.kv
        let from = request.fromSeq
        let links = try await offload { try AuditTrail(kv: kv).links(from: from, limit: limit + 1) }
        var response = Crm_V1_AuditEntriesResponse()
        response.entries = links.prefix(limit).map { Self.view($0.seq, $0.link, $0.stored) }
        if links.count > limit { response.nextSeq = links[limit].seq }
        return response
    }

    private static func view(_ seq: UInt64, _ link: AuditLink?, _ stored: [UInt8]) -> Crm_V1_AuditEntryView {
        var view = Crm_V1_AuditEntryView()
        view.seq = seq
        view.stored = .init(stored)
        guard let link, let entry = AuditEntry(encoded: link.body) else { return view }
        view.logTimeMs = link.logTimeMillis
        view.action = entry.action
        view.actor = entry.actor
        view.application = entry.application
        view.entity = entry.entity?.name ?? ""
        view.recordIds = entry.records.map(\.description)
        view.subjectIds = entry.subjects.map(\.description)
        view.fieldIds = entry.fields.map(UInt32.init)
        view.requestID = entry.requestID
        view.outcome = entry.outcome.name
        view.reason = entry.reason
        return view
    }
}
