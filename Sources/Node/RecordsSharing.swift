import CRM
import CRMProto
import GRPCCore
import Identity

/// Per-record shares (`Share`, `ListShares`): someone whose update scope reaches a record opens
/// it to one user or team, for reading or editing. A share widens that record only: the
/// grantee still needs the object action, and field rules still apply.
extension RecordsService {
    func share(
        request: ServerRequest<Crm_V1_ShareRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_SharesResponse> {
        ServerResponse(
            message: try await share(
                request.message,
                try Self.admit(request.metadata, context, directory.authorization, directory.limiter)))
    }

    func listShares(
        request: ServerRequest<Crm_V1_ListSharesRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_SharesResponse> {
        ServerResponse(
            message: try await listShares(
                request.message,
                try Self.admit(request.metadata, context, directory.authorization, directory.limiter)))
    }

    func share(_ message: Crm_V1_ShareRequest, _ access: Call) async throws -> Crm_V1_SharesResponse {
        return try await write(access) { leader, metadata in
            try await leader.share(message, metadata: metadata)
        } lead: { caller in
            let entity = try RecordsProto.entity(message.entity)
            let id = try RecordsProto.id(message.id)
            let grantee = try Self.grantee(message)
            guard let level = ShareAccess(rawValue: message.access) else {
                throw RPCError(code: .invalidArgument, message: "`access` is read, edit or none")
            }
            for _ in 0..<Self.attempts {
                let actor = try await directory.actor(access)
                let scope = try actor.scope(.update, on: entity)
                guard let record = try crm.changes.read(entity, id), actor.reaches(record.record, within: scope) else {
                    throw RecordError.notFound(entity, id)
                }
                if case .user(let user) = grantee, try crm.changes.read(.user, user) == nil {
                    throw RPCError(code: .invalidArgument, message: "there is no user \(user)")
                }
                var transaction = actor.pinned(try shares.set(entity, id, grantee, level))
                transaction.conditions.append(
                    .version(
                        key: CRMLayout.record(workspace: crm.changes.workspace, entity: entity, id: id), record.version)
                )
                var audit = actor.audit("record.share", entity, id, subject: record.record.subject)
                switch grantee {
                case .user(let user): audit.reason = "user \(user) \(level.rawValue)"
                case .team(let team): audit.reason = "team \(team) \(level.rawValue)"
                }
                switch try await crm.propose(transaction, caller: caller, audit: audit) {
                case .applied: return try Self.sharesResponse(shares.shares(of: entity, id))
                case .conditionFailed: continue // the record or a right changed meanwhile: check again
                }
            }
            throw RPCError(code: .unavailable, message: "the share could not be made; try again")
        }
    }

    /// The shares of a record the user may read.
    func listShares(_ message: Crm_V1_ListSharesRequest, _ access: Call) async throws -> Crm_V1_SharesResponse {
        try crm.checkServing()
        let entity = try RecordsProto.entity(message.entity)
        let id = try RecordsProto.id(message.id)
        try await crm.waitForRead(serializable: false)
        return try await crm.mapped {
            let actor = try await directory.actor(access)
            let scope = try actor.scope(.read, on: entity)
            guard let record = try crm.changes.read(entity, id),
                try actor.reach(.read, record.record, within: scope, shares: shares) != nil
            else { throw RecordError.notFound(entity, id) }
            return Self.sharesResponse(try shares.shares(of: entity, id))
        }
    }

    private static func grantee(_ message: Crm_V1_ShareRequest) throws -> Grantee {
        switch (message.userID.isEmpty, message.teamID.isEmpty) {
        case (false, true): return .user(try RecordsProto.id(message.userID, "user_id"))
        case (true, false): return .team(try RecordsProto.id(message.teamID, "team_id"))
        default: throw RPCError(code: .invalidArgument, message: "give one of `user_id` and `team_id`")
        }
    }

    private static func sharesResponse(
        _ shares: [(grantee: Grantee, access: ShareAccess, version: UInt64)]
    ) -> Crm_V1_SharesResponse {
        var response = Crm_V1_SharesResponse()
        response.shares = shares.map { share in
            var shown = Crm_V1_RecordShare()
            switch share.grantee {
            case .user(let user): shown.userID = user.description
            case .team(let team): shown.teamID = team.description
            }
            shown.access = share.access.rawValue
            return shown
        }
        return response
    }
}
