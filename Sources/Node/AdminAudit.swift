import AuditChain
import CRM
import CRMProto
import Foundation
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
        return try await offload {
            let trail = AuditTrail(kv: kv)
            let retention = AuditRetention(trail: trail)
            let (head, applied) = (try trail.head(), kv.appliedIndex)
            var response = Crm_V1_AuditHeadResponse()
            response.seq = head.seq
            response.hash = .init(head.hash)
            response.appliedIndex = applied
            let base = try retention.base().head
            response.baseSeq = base.seq
            response.baseHash = .init(base.hash)
            response.checkedSeq = try trail.checked()
            response.collectors = try retention.collectors().map { ack in
                .with {
                    $0.name = ack.collector
                    $0.seq = ack.seq
                    $0.acknowledgedAtMs = ack.atMillis
                }
            }
            return response
        }
    }

    /// Entries a filtered call reads at most.
    static let maxAuditScan = 10_000

    /// A collector's acknowledgement, on the leader after a read barrier: the hash must be the
    /// leader's own for that entry (the collector holds the cluster's chain), and it only moves on.
    func auditAcknowledge(
        request: Crm_V1_AuditAcknowledgeRequest, context: ServerContext
    ) async throws -> Crm_V1_AuditAcknowledgeResponse {
        let caller = try leaderAdmin(context)
        guard AuditRetention.isValidCollector(request.collector) else {
            throw RPCError(code: .invalidArgument, message: "`collector` is 1 to 64 of a-z, 0-9, '-', '.', '_'")
        }
        guard request.seq >= 1, request.hash.count == 32 else {
            throw RPCError(code: .invalidArgument, message: "`seq` starts at 1 and `hash` is 32 bytes")
        }
        return try await crm.mapped {
            try await crm.waitForRead(serializable: false)
            let retention = AuditRetention(trail: crm.trail)
            let base = try retention.base().head
            let held = request.seq == base.seq ? base.hash : try retention.hash(of: request.seq)
            guard let held else {
                throw RPCError(
                    code: .failedPrecondition,
                    message: "entry \(request.seq) is not in the leader's trail (it starts after \(base.seq))")
            }
            guard held == Array(request.hash) else {
                throw RPCError(
                    code: .failedPrecondition,
                    message:
                        "entry \(request.seq) differs from the leader's: the collector's copy is not the cluster's chain"
                )
            }
            let found = try retention.acknowledgement(request.collector)
            if let found, found.ack.seq >= request.seq { return Crm_V1_AuditAcknowledgeResponse() }
            if found == nil, try retention.collectors().count >= AuditRetention.maxCollectors {
                throw RPCError(
                    code: .resourceExhausted, message: "\(AuditRetention.maxCollectors) collectors acknowledge already")
            }
            let transaction = retention.acknowledge(
                request.collector, AuditHead(seq: request.seq, hash: Array(request.hash)), readAt: found?.version)
            guard case .applied = try await crm.propose(transaction, caller: caller, audit: nil) else {
                throw RPCError(code: .aborted, message: "the collector acknowledged meanwhile elsewhere; try again")
            }
            return Crm_V1_AuditAcknowledgeResponse()
        }
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
        guard request.hasFilter else {
            let links = try await offload { try AuditTrail(kv: kv).links(from: from, limit: limit + 1) }
            var response = Crm_V1_AuditEntriesResponse()
            response.entries = links.prefix(limit).map { Self.view($0.seq, $0.link, $0.stored) }
            if links.count > limit { response.nextSeq = links[limit].seq }
            return response
        }
        let filter = request.filter
        return try await offload { try Self.query(AuditTrail(kv: kv), from: from, limit: limit, filter) }
    }

    /// Up to `limit` entries from `from` on that match `filter`, reading at most
    /// `maxAuditScan`; `next_seq` says where to go on (entries are in log-time order, so an
    /// entry past `until_ms` ends the search).
    static func query(
        _ trail: AuditTrail, from: UInt64, limit: Int, _ filter: Crm_V1_AuditFilter
    ) throws -> Crm_V1_AuditEntriesResponse {
        var response = Crm_V1_AuditEntriesResponse()
        var next: UInt64? = from
        var scanned = 0
        while let start = next, scanned < maxAuditScan, response.entries.count < limit {
            let links = try trail.links(from: start, limit: min(maxAuditPage, maxAuditScan - scanned) + 1)
            next = links.count > min(maxAuditPage, maxAuditScan - scanned) ? links.last!.seq : nil
            for found in links.dropLast(next == nil ? 0 : 1) {
                scanned += 1
                let view = view(found.seq, found.link, found.stored)
                if filter.untilMs != 0, view.logTimeMs >= filter.untilMs {
                    next = nil
                    break
                }
                guard matches(view, filter) else { continue }
                response.entries.append(view)
                if response.entries.count == limit {
                    next = found.seq + 1
                    break
                }
            }
        }
        assert(scanned <= maxAuditScan, "a filtered call reads a bounded number of entries")
        response.nextSeq = next ?? 0
        return response
    }

    static func matches(_ view: Crm_V1_AuditEntryView, _ filter: Crm_V1_AuditFilter) -> Bool {
        (filter.actionPrefix.isEmpty || view.action.hasPrefix(filter.actionPrefix))
            && (filter.actor.isEmpty || view.actor == filter.actor)
            && (filter.recordID.isEmpty || view.recordIds.contains(filter.recordID))
            && (filter.subjectID.isEmpty || view.subjectIds.contains(filter.subjectID))
            && (filter.outcome.isEmpty || view.outcome == filter.outcome)
            && view.logTimeMs >= filter.sinceMs
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
        view.valueDigests = entry.valueDigests.map {
            "\($0.field):" + AuditChain.hex($0.digest)
        }
        return view
    }
}
