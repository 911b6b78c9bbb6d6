import CRM
import CRMProto
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Identity
import KVStore
import Raft
import Sealing
import Transport

/// The records API (`crm.v1.Records`) on a member's client listener and its front. Reads are
/// answered here; writes are made into transactions by the leader (a follower passes a client's
/// call to it, naming the client; a member's call reaching a follower is refused with the
/// leader's id, so that no call is forwarded twice).
struct RecordsService: Crm_V1_Records.ServiceProtocol {
    /// Sign-in and sessions: every call acts as the session's user (see `Actor`).
    let directory: DirectoryService
    /// The front's copy: a call its member cannot serve (CORRUPT, TAMPER, failed storage) is
    /// passed to the leader instead of refused, as the front does with the KV API.
    var routesAroundItsMember = false

    var crm: CRMRecords { directory.crm }
    var members: MemberClients { directory.members }
    var shares: RecordShares { RecordShares(records: crm.changes) }

    /// Times a write is made again after a condition it did not choose failed (a key-set
    /// rotation, a random id already taken, a touch of the principal it was pinned to).
    static let attempts = 3
    static let maxRequestIDBytes = 128

    /// A call: who makes it, how a write of theirs is routed, and the session headers it
    /// carries (checked where it is served, passed on with it).
    struct Call: Sendable {
        var routing: Routing
        var caller: Caller
        var credentials = Metadata()
    }

    func admit(_ metadata: Metadata, _ context: ServerContext) throws -> Call {
        try Self.admit(metadata, context, directory.authorization, directory.limiter)
    }

    /// The caller of a CRM call (a client, rate-limited, or a member passing one on) and how a
    /// write of theirs is routed.
    static func admit(
        _ metadata: Metadata, _ context: ServerContext, _ authorization: Authorization, _ limiter: RateLimiter
    ) throws -> Call {
        let identity = try authorization.requireClient(context)
        let caller = Caller.of(identity, metadata: metadata)
        let credentials = DirectoryService.sessionHeaders(metadata)
        if case .member = identity { return Call(routing: .refuse, caller: caller, credentials: credentials) }
        try limiter.require(identity)
        return Call(routing: .forwardToLeader, caller: caller, credentials: credentials)
    }

    /// A client the front's HTTP listener has authenticated and rate-limited, with its
    /// `Authorization` headers and the end user's address it asserts.
    static func client(_ identity: PeerIdentity, authorization: [String] = [], clientAddress: String? = nil) -> Call {
        var credentials = Metadata()
        for value in authorization { credentials.addString(value, forKey: "authorization") }
        if let clientAddress { credentials.addString(clientAddress, forKey: DirectoryService.addressKey) }
        return Call(routing: .forwardToLeader, caller: Caller(identity: identity), credentials: credentials)
    }

    /// Runs a write on the leader: here when this member leads, else passed to the leader (a
    /// client's call, with its session headers) or refused naming it (a member's).
    func write<Response>(
        _ access: Call,
        forward: (Crm_V1_Records.Client<HTTP2ClientTransport.Posix>, Metadata) async throws -> Response,
        lead: (Caller) async throws -> Response
    ) async throws -> Response {
        if let passed = try await passedOn(access, forward) { return passed }
        try crm.checkServing()
        if crm.isLeader {
            return try await crm.mapped { try await lead(access.caller) }
        }
        let leader = crm.leaderHint
        guard access.routing == .forwardToLeader, leader != 0 else {
            throw LocalKV.rpcError(.notLeader(leaderHint: leader))
        }
        return try await pass(access, to: leader, forward)
    }

    /// A client's call to the front passed to the leader when this member serves no data
    /// (CORRUPT, TAMPER or failed storage): the front routes around its member, as it does for
    /// the KV API; the member's own client API refuses. Nil: the call is served (or refused) here.
    func passedOn<Response>(
        _ access: Call,
        _ forward: (Crm_V1_Records.Client<HTTP2ClientTransport.Posix>, Metadata) async throws -> Response
    ) async throws -> Response? {
        let leader = crm.leaderHint
        guard routesAroundItsMember, crm.local.gate().refusal != nil, access.routing == .forwardToLeader,
            !crm.isLeader, leader != 0
        else {
            return nil
        }
        return try await pass(access, to: leader, forward)
    }

    /// `access`'s call made on `leader`, with the caller and its session headers.
    private func pass<Response>(
        _ access: Call, to leader: NodeID,
        _ forward: (Crm_V1_Records.Client<HTTP2ClientTransport.Posix>, Metadata) async throws -> Response
    ) async throws -> Response {
        var passed = access.caller.forwarding
        passed.add(contentsOf: access.credentials)
        do {
            return try await forward(try members.records(leader), passed)
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

    func create(_ message: Crm_V1_CreateRecordRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
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
                let actor = try await directory.actor(access)
                let definition = try await auditingDenials(actor, "record.create", entity) {
                    _ = try actor.scope(.create, on: entity)
                    let definition = try crm.changes.definition(entity)
                    try actor.requireEditable(fields.keys, definition)
                    try requireOwnTeams(teams, actor, entity)
                    return definition
                }
                let id =
                    message.requestID.isEmpty
                    ? try CRMID.random() : try crm.changes.id(principal: actor.owner, requestID: message.requestID)
                let ownKey = definition.sealsUnderOwnSubject ? try SymmetricKey.generate() : nil
                var transaction = try crm.changes.create(
                    entity, id: id, fields: fields, owner: actor.owner, teams: teams, principal: actor.owner,
                    now: crm.local.nowMillis(), subjectKey: ownKey)
                transaction.conditions += try TeamStore(directory: directory.identity.directory).joinable(teams)
                var audit = actor.audit(
                    "record.create", entity, id, subject: definition.sealsUnderOwnSubject ? id : nil,
                    fields: definition.ids(of: fields.keys), requestID: message.requestID)
                audit.valueDigests = try crm.changes.valueDigests(
                    fields, entity: entity, record: id, subject: nil, subjectKey: ownKey)
                switch try await crm.propose(actor.pinned(transaction), caller: caller, audit: audit) {
                case .applied:
                    return try response(entity, id, actor)
                case .conditionFailed(condition: 1, _) where !message.requestID.isEmpty:
                    return try response(entity, id, actor) // created before: this is a retry
                case .conditionFailed:
                    continue // the key set was rotated, the random id was taken, or a right changed: again
                }
            }
            throw RPCError(code: .unavailable, message: "the record could not be created; try again")
        }
    }

    /// A new record's teams are the creator's own, unless the creator may update every record.
    private func requireOwnTeams(_ teams: [CRMID], _ actor: Actor, _ entity: EntityCode) throws {
        guard teams.contains(where: { !actor.teams.contains($0) }) else { return }
        guard actor.access.scope(.update, on: entity) == .all else {
            throw RPCError(code: .permissionDenied, message: "a record you create belongs only to teams you are in")
        }
    }

    func update(_ message: Crm_V1_UpdateRecordRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            try await leader.update(message, metadata: metadata)
        } lead: { caller in
            let set = try RecordsProto.values(message.set)
            let (entity, id, actor) = try await changeRecord(
                access, message.entity, message.id, message.expectedVersion, .update, "record.update",
                written: Array(set.keys) + message.clear, values: set
            ) { actor, current, definition in
                try actor.requireEditable(Array(set.keys) + message.clear, definition)
                return try crm.changes.update(
                    current, set: set, clear: message.clear,
                    history: HistoryStamp(actor: actor.owner, atMillis: crm.local.nowMillis()))
            }
            return try response(entity, id, actor)
        }
    }

    func delete(_ message: Crm_V1_VersionedRecordRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        try await setDeleted(message, access, true)
    }

    func undelete(_ message: Crm_V1_VersionedRecordRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        try await setDeleted(message, access, false)
    }

    private func setDeleted(
        _ message: Crm_V1_VersionedRecordRequest, _ access: Call, _ deleted: Bool
    ) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            deleted
                ? try await leader.delete(message, metadata: metadata)
                : try await leader.undelete(message, metadata: metadata)
        } lead: { caller in
            let (entity, id, actor) = try await changeRecord(
                access, message.entity, message.id, message.expectedVersion, .delete,
                deleted ? "record.delete" : "record.undelete"
            ) { _, current, _ in try crm.changes.setDeleted(current, deleted) }
            return try response(entity, id, actor)
        }
    }

    func link(_ message: Crm_V1_LinkRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        try await changeLink(message, access, linking: true)
    }

    func unlink(_ message: Crm_V1_LinkRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        try await changeLink(message, access, linking: false)
    }

    /// A link is an update of the record; its target must be one the user may read.
    private func changeLink(
        _ message: Crm_V1_LinkRequest, _ access: Call, linking: Bool
    ) async throws -> Crm_V1_RecordResponse {
        return try await write(access) { leader, metadata in
            linking
                ? try await leader.link(message, metadata: metadata)
                : try await leader.unlink(message, metadata: metadata)
        } lead: { caller in
            let target = RecordRef(
                entity: try RecordsProto.entity(message.target.entity),
                id: try RecordsProto.id(message.target.id, "target.id"))
            let (entity, id, actor) = try await changeRecord(
                access, message.entity, message.id, message.expectedVersion, .update,
                linking ? "record.link" : "record.unlink"
            ) { actor, current, _ in
                guard linking else { return try crm.changes.unlink(current, from: target) }
                guard let found = try crm.changes.read(target.entity, target.id),
                    try actor.reach(
                        .read, found.record, within: actor.access.scope(.read, on: target.entity),
                        shares: shares) != nil
                else { throw RecordError.notFound(target.entity, target.id) }
                return try crm.changes.link(current, to: target)
            }
            return try response(entity, id, actor)
        }
    }

    func destroy(
        _ message: Crm_V1_VersionedRecordRequest, _ access: Call
    ) async throws -> Crm_V1_DestroyRecordResponse {
        return try await write(access) { leader, metadata in
            try await leader.destroy(message, metadata: metadata)
        } lead: { caller in
            _ = try await changeRecord(
                access, message.entity, message.id, message.expectedVersion, .destroy, "record.destroy"
            ) { _, current, _ in
                var transaction = crm.changes.destroy(current)
                transaction.operations.append(shares.removeAll(current.record.entity, current.record.id))
                return transaction
            }
            return Crm_V1_DestroyRecordResponse()
        }
    }

    /// Proposes `make`'s change of the record at the version the caller read, as the call's
    /// actor: the action checked first (PERMISSION_DENIED without it), then the record's scope
    /// (NOT_FOUND outside it, as for a missing id), then the version. The leader's own state is
    /// current (it applies every entry it has committed before it serves). A change whose
    /// conditions failed is made again from a fresh read and a fresh check, refused if the
    /// record changed.
    private func changeRecord(
        _ access: Call, _ entityName: String, _ idText: String, _ expected: UInt64, _ action: ObjectAction,
        _ auditAction: String, written: [String] = [], values: [String: FieldValue] = [:],
        _ make: (Actor, VersionedRecord, EntityDefinition) throws -> Transaction
    ) async throws -> (EntityCode, CRMID, Actor) {
        let entity = try RecordsProto.entity(entityName)
        let id = try RecordsProto.id(idText)
        guard expected != 0 else {
            throw RPCError(
                code: .failedPrecondition, message: "`expected_version` is required: the version the change is based on"
            )
        }
        for _ in 0..<Self.attempts {
            let actor = try await directory.actor(access)
            let (current, definition, transaction) = try await auditingDenials(actor, auditAction, entity, [id]) {
                let scope = try actor.scope(action, on: entity)
                guard let current = try crm.changes.read(entity, id),
                    let opened = try actor.reach(action, current.record, within: scope, shares: shares)
                else { throw RecordError.notFound(entity, id) }
                guard current.version == expected else { throw RecordError.versionMismatch(current: current.version) }
                let definition = try crm.changes.definition(entity)
                var transaction = actor.pinned(try make(actor, current, definition))
                transaction.conditions += opened
                return (current, definition, transaction)
            }
            if case let delay = FaultHooks.shared.checkToCommitDelayMilliseconds, delay > 0 {
                try await Task.sleep(for: .milliseconds(delay))
            }
            var audit = actor.audit(
                auditAction, entity, id, subject: current.record.subject, fields: definition.ids(of: written))
            audit.valueDigests = try crm.changes.valueDigests(
                values, entity: entity, record: id, subject: current.record.subject)
            switch try await crm.propose(transaction, caller: access.caller, audit: audit) {
            case .applied: return (entity, id, actor)
            case .conditionFailed: continue
            }
        }
        throw RPCError(code: .unavailable, message: "the change could not be made; try again")
    }

    // MARK: Custom fields

    func putField(_ message: Crm_V1_PutFieldRequest, _ access: Call) async throws -> Crm_V1_DescribeResponse {
        return try await write(access) { leader, metadata in
            try await leader.putField(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            let spec = try RecordsProto.fieldSpec(message)
            return try await changeFields(entity, access) { try crm.changes.putField(entity, spec) }
        }
    }

    func retireField(_ message: Crm_V1_RetireFieldRequest, _ access: Call) async throws -> Crm_V1_DescribeResponse {
        return try await write(access) { leader, metadata in
            try await leader.retireField(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            return try await changeFields(entity, access) { try crm.changes.retireField(entity, name: message.name) }
        }
    }

    /// Proposes a change of `entity`'s custom fields (the permission role.admin: fields are
    /// configuration, as roles are), made again from a fresh read when another change came
    /// first; answers the description after it.
    private func changeFields(
        _ entity: EntityCode, _ access: Call, _ make: () throws -> Transaction?
    ) async throws -> Crm_V1_DescribeResponse {
        var actor = try await directory.actor(access)
        for _ in 0..<Self.attempts {
            try await auditingDenials(actor, "field.change", entity) { try actor.require(.roleAdmin) }
            guard let transaction = try make() else { break }
            let audit = AuditEntry(
                action: "field.change", actor: actor.owner, application: actor.application, entity: entity)
            switch try await crm.propose(actor.pinned(transaction), caller: access.caller, audit: audit) {
            case .applied: return described(try crm.changes.definition(entity), actor)
            case .conditionFailed: actor = try await directory.actor(access)
            }
        }
        return described(try crm.changes.definition(entity), actor)
    }

    // MARK: Reads

    func get(_ message: Crm_V1_GetRecordRequest, _ access: Call) async throws -> Crm_V1_RecordResponse {
        if let passed = try await passedOn(access, { try await $0.get(message, metadata: $1) }) { return passed }
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let id = try RecordsProto.id(message.id)
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            return try await auditingDenials(actor, "record.read", entity, [id]) {
                let scope = try actor.scope(.read, on: entity)
                let definition = try crm.changes.definition(entity)
                let fields = try actor.fieldsToOpen(try fieldSet(definition, message.fields), definition)
                guard let record = try crm.changes.read(entity, id),
                    try actor.reach(.read, record.record, within: scope, shares: shares) != nil
                else {
                    throw RecordError.notFound(entity, id)
                }
                try await auditRead("record.read", actor, [record], fields: fields, definition)
                var response = Crm_V1_RecordResponse()
                response.record = try opened(record, fields: fields, definition)
                return response
            }
        }
    }

    static let maxBatchGet = 100

    func batchGet(
        _ message: Crm_V1_BatchGetRecordsRequest, _ access: Call
    ) async throws -> Crm_V1_BatchGetRecordsResponse {
        if let passed = try await passedOn(access, { try await $0.batchGet(message, metadata: $1) }) { return passed }
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        guard message.ids.count <= Self.maxBatchGet else {
            throw RPCError(code: .invalidArgument, message: "a batch get asks for at most \(Self.maxBatchGet) ids")
        }
        let ids = try message.ids.map { try RecordsProto.id($0, "ids") }
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            return try await auditingDenials(actor, "record.read", entity, ids) {
                try await batchGet(ids, entity, message.fields, actor)
            }
        }
    }

    private func batchGet(
        _ ids: [CRMID], _ entity: EntityCode, _ asked: [String], _ actor: Actor
    ) async throws -> Crm_V1_BatchGetRecordsResponse {
        let scope = try actor.scope(.read, on: entity)
        let definition = try crm.changes.definition(entity)
        let fields = try actor.fieldsToOpen(try fieldSet(definition, asked), definition)
        var response = Crm_V1_BatchGetRecordsResponse()
        var found: [VersionedRecord] = []
        for id in ids {
            if let record = try crm.changes.read(entity, id),
                try actor.reach(.read, record.record, within: scope, shares: shares) != nil
            {
                found.append(record)
            } else {
                response.missing.append(id.description)
            }
        }
        let missing = ids.filter { id in !found.contains { $0.record.id == id } }
        if !missing.isEmpty {
            let entry = AuditEntry(
                action: "record.read", actor: actor.owner, application: actor.application, entity: entity,
                records: missing, outcome: .denied, reason: "not found")
            try? await directory.audit.record([entry], wait: false)
        }
        try await auditRead("record.read", actor, found, fields: fields, definition)
        response.records = try found.map { try opened($0, fields: fields, definition) }
        return response
    }

    /// A page of records in the user's read scope: a page may hold fewer than asked (even none)
    /// when records out of scope were passed over; its token continues after them.
    func list(_ message: Crm_V1_ListRecordsRequest, _ access: Call) async throws -> Crm_V1_ListRecordsResponse {
        if let passed = try await passedOn(access, { try await $0.list(message, metadata: $1) }) { return passed }
        try crm.checkServing()
        try checkFieldCount(message.fields)
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            let query = try RecordsProto.listQuery(message, caller: actor.owner)
            return try await auditingDenials(actor, "record.list", query.entity) {
                try await list(query, message, actor)
            }
        }
    }

    private func list(
        _ query: ListQuery, _ message: Crm_V1_ListRecordsRequest, _ actor: Actor
    ) async throws -> Crm_V1_ListRecordsResponse {
        let scope = try actor.scope(.read, on: query.entity)
        let definition = try crm.changes.definition(query.entity)
        let fields = try actor.fieldsToOpen(try fieldSet(definition, message.fields), definition)
        let readable = actor.readable(definition)
        if let hidden = query.filters.keys.first(where: { !readable.contains($0) }) {
            throw RecordError.unknownField(entity: query.entity, name: hidden)
        }
        guard let keySet = try crm.keys.inUse() else { return Crm_V1_ListRecordsResponse() }
        let workspace = crm.changes.workspace
        let now = crm.local.nowMillis()
        let after =
            message.pageToken.isEmpty
            ? nil
            : try PageTokens.open(
                message.pageToken, query: query, principal: actor.pageTokenHolder, workspace: workspace,
                nowMillis: now, keySets: { try? crm.keys.keySet($0) })
        let page = try crm.changes.list(query, after: after)
        var response = Crm_V1_ListRecordsResponse()
        let listed = try page.records.filter {
            try actor.reach(.read, $0.record, within: scope, shares: shares) != nil
        }
        try await auditRead("record.list", actor, listed, fields: fields, definition)
        response.records = try listed.map { try opened($0, fields: fields, definition) }
        if let resume = page.resumeAfter {
            response.nextPageToken = try PageTokens.seal(
                resume, query: query, principal: actor.pageTokenHolder, workspace: workspace, issuedAtMillis: now,
                keySet: keySet)
        }
        return response
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

    /// A lookup reads the field it looks up by: refused without read access to it.
    func lookup(_ message: Crm_V1_LookupRequest, _ access: Call) async throws -> Crm_V1_RecordsResponse {
        if let passed = try await passedOn(access, { try await $0.lookup(message, metadata: $1) }) { return passed }
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let by = try RecordsProto.lookup(message.by)
        guard let field = EntityCatalog.standard(entity).fields.first(where: { $0.lookup == by }) else {
            throw RPCError(code: .invalidArgument, message: "\(entity.name) records are not looked up by \(message.by)")
        }
        guard message.value.utf8.count <= CRMLimits.textBytes else {
            throw RPCError(code: .invalidArgument, message: "`value` is at most \(CRMLimits.textBytes) bytes")
        }
        try await crm.waitForRead(serializable: message.serializable)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            return try await auditingDenials(actor, "record.lookup", entity) {
                try await lookup(message, entity, by, field, actor)
            }
        }
    }

    private func lookup(
        _ message: Crm_V1_LookupRequest, _ entity: EntityCode, _ by: FieldLookup, _ field: FieldDefinition,
        _ actor: Actor
    ) async throws -> Crm_V1_RecordsResponse {
        let scope = try actor.scope(.read, on: entity)
        let definition = try crm.changes.definition(entity)
        let fields = try actor.fieldsToOpen(nil, definition)
        if !fields.contains(field.name) {
            throw RPCError(
                code: .permissionDenied,
                message: "looking \(entity.name) records up by \(message.by) needs read access to \(field.name)")
        }
        guard try crm.keys.versionInUse() != 0 else { return Crm_V1_RecordsResponse() }
        guard let found = try crm.changes.lookup(entity, by: by, value: message.value) else {
            throw RPCError(code: .invalidArgument, message: "`value` is not a valid \(message.by)")
        }
        var response = Crm_V1_RecordsResponse()
        let reached = try found.filter {
            try (message.includeDeleted || !$0.record.deleted)
                && actor.reach(.read, $0.record, within: scope, shares: shares) != nil
        }
        try await auditRead("record.lookup", actor, reached, fields: fields, definition)
        response.records = try reached.map { try opened($0, fields: fields, definition) }
        return response
    }

    /// The entity's fields the user may read (the others are absent, as if the entity had none);
    /// every field for a role administrator, who names fields in roles (a definition holds no
    /// personal data).
    func describe(_ message: Crm_V1_DescribeRequest, _ access: Call) async throws -> Crm_V1_DescribeResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        try await crm.waitForRead(serializable: false)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            if !actor.has(.roleAdmin) { _ = try actor.scope(.read, on: entity) }
            return described(try crm.changes.definition(entity), actor)
        }
    }

    private func described(_ definition: EntityDefinition, _ actor: Actor) -> Crm_V1_DescribeResponse {
        guard !actor.has(.roleAdmin) else { return RecordsProto.describe(definition) }
        let readable = actor.readable(definition)
        var visible = definition
        visible.fields = definition.fields.filter { readable.contains($0.name) }
        return RecordsProto.describe(visible)
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

    /// The record as it is now on this member, after a write by `actor`: the fields they may
    /// read, none when the record is outside their read scope.
    private func response(_ entity: EntityCode, _ id: CRMID, _ actor: Actor) throws -> Crm_V1_RecordResponse {
        guard let record = try crm.changes.read(entity, id) else { throw RecordError.notFound(entity, id) }
        let definition = try crm.changes.definition(entity)
        let reads = actor.access.scope(.read, on: entity)
        let fields =
            try actor.reach(.read, record.record, within: reads, shares: shares) != nil
            ? actor.fieldsAfterWrite(definition) : []
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
