import CRM
import CRMProto
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KVStore
import Raft
import Transport

/// The records API (`crm.v1.Records`) on a member's client listener and its front. Reads are
/// answered here; writes are made into transactions by the leader (a follower passes a client's
/// call to it, naming the client; a member's call reaching a follower is refused with the
/// leader's id, so that no call is forwarded twice).
struct RecordsService: Crm_V1_Records.ServiceProtocol {
    let crm: CRMRecords
    let members: MemberClients
    let authorization: Authorization
    let limiter: RateLimiter

    /// Times a write is made again after a condition it did not choose failed (a key-set
    /// rotation, or a random id already taken).
    static let attempts = 3
    static let maxRequestIDBytes = 128

    /// Who calls and how a write of theirs is routed.
    struct Access: Sendable {
        var routing: Routing
        var caller: Caller
    }

    private func admit(_ metadata: Metadata, _ context: ServerContext) throws -> Access {
        try Self.admit(metadata, context, authorization, limiter)
    }

    /// The caller of a CRM call (a client, rate-limited, or a member passing one on) and how a
    /// write of theirs is routed.
    static func admit(
        _ metadata: Metadata, _ context: ServerContext, _ authorization: Authorization, _ limiter: RateLimiter
    ) throws -> Access {
        let identity = try authorization.requireClient(context)
        let caller = Caller.of(identity, metadata: metadata)
        if case .member = identity { return Access(routing: .refuse, caller: caller) }
        try limiter.require(identity)
        return Access(routing: .forwardToLeader, caller: caller)
    }

    /// A client the front's HTTP listener has authenticated and rate-limited.
    static func client(_ identity: PeerIdentity) -> Access {
        Access(routing: .forwardToLeader, caller: Caller(identity: identity))
    }

    /// Runs a write on the leader: here when this member leads, else passed to the leader (a
    /// client's call) or refused naming it (a member's).
    private func write<Response>(
        _ access: Access,
        forward: (Crm_V1_Records.Client<HTTP2ClientTransport.Posix>, Metadata) async throws -> Response,
        lead: (Caller) async throws -> Response
    ) async throws -> Response {
        try crm.checkServing()
        if crm.isLeader {
            return try await crm.mapped { try await lead(access.caller) }
        }
        let leader = crm.leaderHint
        guard access.routing == .forwardToLeader, leader != 0 else {
            throw LocalKV.rpcError(.notLeader(leaderHint: leader))
        }
        do {
            return try await forward(try members.records(leader), access.caller.forwarding)
        } catch let error as RPCError {
            throw error.relayed()
        }
    }

    // MARK: gRPC

    func create(
        request: ServerRequest<Crm_V1_CreateRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await create(request.message, try admit(request.metadata, context)))
    }

    func update(
        request: ServerRequest<Crm_V1_UpdateRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await update(request.message, try admit(request.metadata, context)))
    }

    func delete(
        request: ServerRequest<Crm_V1_VersionedRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await delete(request.message, try admit(request.metadata, context)))
    }

    func undelete(
        request: ServerRequest<Crm_V1_VersionedRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await undelete(request.message, try admit(request.metadata, context)))
    }

    func link(
        request: ServerRequest<Crm_V1_LinkRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await link(request.message, try admit(request.metadata, context)))
    }

    func unlink(
        request: ServerRequest<Crm_V1_LinkRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await unlink(request.message, try admit(request.metadata, context)))
    }

    func destroy(
        request: ServerRequest<Crm_V1_VersionedRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DestroyRecordResponse> {
        ServerResponse(message: try await destroy(request.message, try admit(request.metadata, context)))
    }

    func get(
        request: ServerRequest<Crm_V1_GetRecordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordResponse> {
        ServerResponse(message: try await get(request.message, try admit(request.metadata, context)))
    }

    func batchGet(
        request: ServerRequest<Crm_V1_BatchGetRecordsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_BatchGetRecordsResponse> {
        ServerResponse(message: try await batchGet(request.message, try admit(request.metadata, context)))
    }

    func list(
        request: ServerRequest<Crm_V1_ListRecordsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListRecordsResponse> {
        ServerResponse(message: try await list(request.message, try admit(request.metadata, context)))
    }

    func lookup(
        request: ServerRequest<Crm_V1_LookupRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecordsResponse> {
        ServerResponse(message: try await lookup(request.message, try admit(request.metadata, context)))
    }

    func describe(
        request: ServerRequest<Crm_V1_DescribeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DescribeResponse> {
        ServerResponse(message: try await describe(request.message, try admit(request.metadata, context)))
    }

    func putField(
        request: ServerRequest<Crm_V1_PutFieldRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DescribeResponse> {
        ServerResponse(message: try await putField(request.message, try admit(request.metadata, context)))
    }

    func retireField(
        request: ServerRequest<Crm_V1_RetireFieldRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DescribeResponse> {
        ServerResponse(message: try await retireField(request.message, try admit(request.metadata, context)))
    }

    // MARK: Writes

    func create(_ message: Crm_V1_CreateRecordRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            try await leader.create(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            let fields = try RecordsProto.values(message.fields)
            let teams = try message.teams.map { try RecordsProto.id($0, "teams") }
            guard message.requestID.utf8.count <= Self.maxRequestIDBytes else {
                throw RPCError(
                    code: .invalidArgument, message: "`request_id` is at most \(Self.maxRequestIDBytes) bytes")
            }
            try await crm.ensureKeySet(caller: caller)
            for _ in 0..<Self.attempts {
                let id =
                    message.requestID.isEmpty
                    ? try CRMID.random() : try crm.changes.id(principal: caller.owner, requestID: message.requestID)
                let transaction = try crm.changes.create(
                    entity, id: id, fields: fields, owner: caller.owner, teams: teams, principal: caller.owner,
                    now: crm.local.nowMillis())
                switch try await crm.propose(transaction, caller: caller) {
                case .applied:
                    return try response(entity, id, fields: nil)
                case .conditionFailed(condition: 1, _) where !message.requestID.isEmpty:
                    return try response(entity, id, fields: nil) // created before: this is a retry
                case .conditionFailed:
                    continue // the key set was rotated, or the random id was taken: make it again
                }
            }
            throw RPCError(code: .unavailable, message: "the record could not be created; try again")
        }
    }

    func update(_ message: Crm_V1_UpdateRecordRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            try await leader.update(message, metadata: metadata)
        } lead: { caller in
            let (entity, current) = try readForChange(message.entity, message.id, message.expectedVersion)
            let set = try RecordsProto.values(message.set)
            return try await changeRecord(entity, current, caller) {
                try crm.changes.update($0, set: set, clear: message.clear)
            }
        }
    }

    func delete(_ message: Crm_V1_VersionedRecordRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        try await setDeleted(message, access, true)
    }

    func undelete(_ message: Crm_V1_VersionedRecordRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        try await setDeleted(message, access, false)
    }

    private func setDeleted(
        _ message: Crm_V1_VersionedRecordRequest, _ access: Access, _ deleted: Bool
    ) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            deleted
                ? try await leader.delete(message, metadata: metadata)
                : try await leader.undelete(message, metadata: metadata)
        } lead: { caller in
            let (entity, current) = try readForChange(message.entity, message.id, message.expectedVersion)
            return try await changeRecord(entity, current, caller) { try crm.changes.setDeleted($0, deleted) }
        }
    }

    func link(_ message: Crm_V1_LinkRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        try await changeLink(message, access, linking: true)
    }

    func unlink(_ message: Crm_V1_LinkRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        try await changeLink(message, access, linking: false)
    }

    private func changeLink(
        _ message: Crm_V1_LinkRequest, _ access: Access, linking: Bool
    ) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            linking
                ? try await leader.link(message, metadata: metadata)
                : try await leader.unlink(message, metadata: metadata)
        } lead: { caller in
            let (entity, current) = try readForChange(message.entity, message.id, message.expectedVersion)
            let target = RecordRef(
                entity: try RecordsProto.entity(message.target.entity),
                id: try RecordsProto.id(message.target.id, "target.id"))
            return try await changeRecord(entity, current, caller) { base in
                guard linking else { return try crm.changes.unlink(base, from: target) }
                guard try crm.changes.read(target.entity, target.id) != nil else {
                    throw RecordError.notFound(target.entity, target.id)
                }
                return try crm.changes.link(base, to: target)
            }
        }
    }

    func destroy(
        _ message: Crm_V1_VersionedRecordRequest, _ access: Access
    ) async throws -> Crm_V1_DestroyRecordResponse {
        return try await write(access) { leader, metadata in
            try await leader.destroy(message, metadata: metadata)
        } lead: { caller in
            let (_, current) = try readForChange(message.entity, message.id, message.expectedVersion)
            switch try await crm.propose(crm.changes.destroy(current), caller: caller) {
            case .applied: return Crm_V1_DestroyRecordResponse()
            case .conditionFailed(_, let now?): throw RecordError.versionMismatch(current: now)
            case .conditionFailed: throw RecordError.notFound(current.record.entity, current.record.id)
            }
        }
    }

    /// The record to change, at the version the caller read: the leader's own state is current
    /// (it applies every entry it has committed before it serves), and the transaction is
    /// conditioned on that version anyway.
    private func readForChange(
        _ entityName: String, _ idText: String, _ expected: UInt64
    ) throws -> (
        EntityCode, VersionedRecord
    ) {
        let entity = try RecordsProto.entity(entityName)
        let id = try RecordsProto.id(idText)
        guard expected != 0 else {
            throw RPCError(
                code: .failedPrecondition, message: "`expected_version` is required: the version the change is based on"
            )
        }
        guard let current = try crm.changes.read(entity, id) else { throw RecordError.notFound(entity, id) }
        guard current.version == expected else { throw RecordError.versionMismatch(current: current.version) }
        return (entity, current)
    }

    /// Proposes a change made from `current`; made again from a fresh read if only the key set
    /// changed meanwhile, refused if the record did.
    private func changeRecord(
        _ entity: EntityCode, _ current: VersionedRecord, _ caller: Caller,
        _ make: (VersionedRecord) throws -> Transaction
    ) async throws -> Crm_V1_RecordResponse {
        var base = current
        for _ in 0..<Self.attempts {
            switch try await crm.propose(try make(base), caller: caller) {
            case .applied: return try response(entity, current.record.id, fields: nil)
            case .conditionFailed:
                guard let now = try crm.changes.read(entity, current.record.id) else {
                    throw RecordError.notFound(entity, current.record.id)
                }
                guard now.version == current.version else { throw RecordError.versionMismatch(current: now.version) }
                base = now
            }
        }
        throw RPCError(code: .unavailable, message: "the change could not be made; try again")
    }

    // MARK: Custom fields

    func putField(_ message: Crm_V1_PutFieldRequest, _ access: Access) async throws -> Crm_V1_DescribeResponse {
        return try await write(access) { leader, metadata in
            try await leader.putField(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            let spec = try RecordsProto.fieldSpec(message)
            return try await changeFields(entity, caller) { try crm.changes.putField(entity, spec) }
        }
    }

    func retireField(_ message: Crm_V1_RetireFieldRequest, _ access: Access) async throws -> Crm_V1_DescribeResponse {
        return try await write(access) { leader, metadata in
            try await leader.retireField(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            return try await changeFields(entity, caller) { try crm.changes.retireField(entity, name: message.name) }
        }
    }

    /// Proposes a change of `entity`'s custom fields, made again from a fresh read when another
    /// change came first; answers the description after it.
    private func changeFields(
        _ entity: EntityCode, _ caller: Caller, _ make: () throws -> Transaction?
    ) async throws -> Crm_V1_DescribeResponse {
        for _ in 0..<Self.attempts {
            guard let transaction = try make() else { break }
            switch try await crm.propose(transaction, caller: caller) {
            case .applied: return RecordsProto.describe(try crm.changes.definition(entity))
            case .conditionFailed: continue
            }
        }
        return RecordsProto.describe(try crm.changes.definition(entity))
    }

    // MARK: Reads

    func get(_ message: Crm_V1_GetRecordRequest, _ access: Access) async throws -> Crm_V1_RecordResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let id = try RecordsProto.id(message.id)
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let definition = try crm.changes.definition(entity)
            return try response(entity, id, fields: try fieldSet(definition, message.fields), definition)
        }
    }

    static let maxBatchGet = 100

    func batchGet(
        _ message: Crm_V1_BatchGetRecordsRequest, _ access: Access
    ) async throws -> Crm_V1_BatchGetRecordsResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        guard message.ids.count <= Self.maxBatchGet else {
            throw RPCError(code: .invalidArgument, message: "a batch get asks for at most \(Self.maxBatchGet) ids")
        }
        let ids = try message.ids.map { try RecordsProto.id($0, "ids") }
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let definition = try crm.changes.definition(entity)
            let fields = try fieldSet(definition, message.fields)
            var response = Crm_V1_BatchGetRecordsResponse()
            for id in ids {
                if let record = try crm.changes.read(entity, id) {
                    response.records.append(try opened(record, fields: fields, definition))
                } else {
                    response.missing.append(id.description)
                }
            }
            return response
        }
    }

    func list(_ message: Crm_V1_ListRecordsRequest, _ access: Access) async throws -> Crm_V1_ListRecordsResponse {
        let caller = access.caller
        try crm.checkServing()
        let query = try RecordsProto.listQuery(message, caller: caller.owner)
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let definition = try crm.changes.definition(query.entity)
            let fields = try fieldSet(definition, message.fields)
            guard let keySet = try crm.keys.inUse() else { return Crm_V1_ListRecordsResponse() }
            let workspace = crm.changes.workspace
            let now = crm.local.nowMillis()
            let after =
                message.pageToken.isEmpty
                ? nil
                : try PageTokens.open(
                    message.pageToken, query: query, principal: caller.owner, workspace: workspace,
                    nowMillis: now, keySets: { try? crm.keys.keySet($0) })
            let page = try crm.changes.list(query, after: after)
            var response = Crm_V1_ListRecordsResponse()
            response.records = try page.records.map { try opened($0, fields: fields, definition) }
            if let resume = page.resumeAfter {
                response.nextPageToken = try PageTokens.seal(
                    resume, query: query, principal: caller.owner, workspace: workspace, issuedAtMillis: now,
                    keySet: keySet)
            }
            return response
        }
    }

    private func checkFieldCount(_ names: [String]) throws {
        guard names.count <= CRMLimits.fields else {
            throw RPCError(code: .invalidArgument, message: "ask for at most \(CRMLimits.fields) fields")
        }
    }

    /// The fields a read asks for (nil: all), each one the entity has.
    private func fieldSet(_ definition: EntityDefinition, _ names: [String]) throws -> Set<String>? {
        guard !names.isEmpty else { return nil }
        for name in names where definition.field(named: name) == nil {
            throw RecordError.unknownField(entity: definition.code, name: name)
        }
        return Set(names)
    }

    func lookup(_ message: Crm_V1_LookupRequest, _ access: Access) async throws -> Crm_V1_RecordsResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let by = try RecordsProto.lookup(message.by)
        guard EntityCatalog.standard(entity).fields.contains(where: { $0.lookup == by }) else {
            throw RPCError(code: .invalidArgument, message: "\(entity.name) records are not looked up by \(message.by)")
        }
        guard message.value.utf8.count <= CRMLimits.textBytes else {
            throw RPCError(code: .invalidArgument, message: "`value` is at most \(CRMLimits.textBytes) bytes")
        }
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            guard try crm.keys.versionInUse() != 0 else { return Crm_V1_RecordsResponse() }
            guard let found = try crm.changes.lookup(entity, by: by, value: message.value) else {
                throw RPCError(code: .invalidArgument, message: "`value` is not a valid \(message.by)")
            }
            let definition = try crm.changes.definition(entity)
            var response = Crm_V1_RecordsResponse()
            response.records = try found.filter { message.includeDeleted || !$0.record.deleted }.map {
                try opened($0, fields: nil, definition)
            }
            return response
        }
    }

    func describe(_ message: Crm_V1_DescribeRequest, _ access: Access) async throws -> Crm_V1_DescribeResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        try await crm.waitForRead(serializable: false)
        return try await crm.mapped { RecordsProto.describe(try crm.changes.definition(entity)) }
    }

    /// The definition of `entity`: this member's when it knows every field in `names`, else read
    /// again after a linearizable barrier (a field added a moment ago through another member).
    func definition(_ entity: EntityCode, knowing names: [String] = []) async throws -> EntityDefinition {
        try crm.checkServing()
        return try await crm.mapped {
            let local = try crm.changes.definition(entity)
            guard names.contains(where: { local.field(named: $0) == nil }) else { return local }
            try await crm.waitForRead(serializable: false)
            return try crm.changes.definition(entity)
        }
    }

    /// The record as it is now on this member, with `fields` (all when nil) opened.
    private func response(
        _ entity: EntityCode, _ id: CRMID, fields: Set<String>?, _ definition: EntityDefinition? = nil
    ) throws -> Crm_V1_RecordResponse {
        guard let record = try crm.changes.read(entity, id) else { throw RecordError.notFound(entity, id) }
        var response = Crm_V1_RecordResponse()
        response.record = try opened(record, fields: fields, definition)
        return response
    }

    /// `record` in its gRPC form, with `fields` (all when nil) opened.
    private func opened(
        _ record: VersionedRecord, fields: Set<String>?, _ definition: EntityDefinition? = nil
    ) throws -> Crm_V1_Record {
        RecordsProto.record(
            record, fields: try crm.changes.open(record.record, fields: fields, definition: definition))
    }
}
