import CRM
import CRMProto
import GRPCCore
import Identity

/// Field history reads: the permission history.read and the right to read the record; only the
/// changes of fields the caller may read (personal ones not while the exfiltration guard holds
/// their reads), audited like any read (waited for when it releases personal values).
extension RecordsService {
    static let defaultHistoryLimit = 100

    func history(
        request: ServerRequest<Crm_V1_HistoryRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_HistoryResponse> {
        ServerResponse(message: try await history(request.message, try admit(request.metadata, context)))
    }

    func history(_ message: Crm_V1_HistoryRequest, _ access: Call) async throws -> Crm_V1_HistoryResponse {
        if let passed = try await passedOn(access, { try await $0.history(message, metadata: $1) }) { return passed }
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let id = try RecordsProto.id(message.id)
        guard message.limit <= UInt32(FieldHistory.maxRead) else {
            throw RPCError(code: .invalidArgument, message: "`limit` is at most \(FieldHistory.maxRead)")
        }
        let limit = message.limit == 0 ? Self.defaultHistoryLimit : Int(message.limit)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            return try await auditingDenials(actor, "record.history", entity, [id]) {
                guard actor.access.permissions.contains(.historyRead) else {
                    throw RPCError(code: .permissionDenied, message: "this needs the permission history.read")
                }
                let definition = try crm.changes.definition(entity)
                guard let record = try crm.changes.read(entity, id),
                    try actor.reach(.read, record.record, within: try actor.scope(.read, on: entity), shares: shares)
                        != nil
                else { throw RecordError.notFound(entity, id) }
                var readable = actor.readable(definition)
                if actor.readsHeld { readable = readable.filter { definition.field(named: $0)?.personal != true } }
                let entries = try crm.changes.history(of: record.record, limit: limit)
                var response = Crm_V1_HistoryResponse()
                var released: Set<String> = []
                for entry in entries {
                    let changes = entry.changes.compactMap { change -> Crm_V1_FieldChangeView? in
                        guard let field = definition.field(id: change.field), readable.contains(field.name) else {
                            return nil
                        }
                        released.insert(field.name)
                        var view = Crm_V1_FieldChangeView()
                        view.field = field.name
                        if let old = change.old { view.oldValue = RecordsProto.proto(old) }
                        if let new = change.new { view.newValue = RecordsProto.proto(new) }
                        return view
                    }
                    guard !changes.isEmpty else { continue }
                    response.items.append(
                        .with {
                            $0.timeMs = entry.stamp.atMillis
                            $0.actor = entry.stamp.actor
                            $0.changes = changes
                        })
                }
                try await auditRead("record.history", actor, [record], fields: released, definition)
                return response
            }
        }
    }
}
