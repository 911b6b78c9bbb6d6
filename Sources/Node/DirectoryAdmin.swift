import CRM
import CRMProto
import GRPCCore
import Identity
import KVStore

/// The directory's administration: users (permission user.admin) and roles (role.admin), as
/// the session's user, on the leader. Rights are the user's roles within the application's
/// ceiling; a session that must change its password may do nothing here.
extension DirectoryService {
    /// The session's user and their rights; refused without `permission` (when one is asked).
    func acting(
        _ metadata: Metadata, _ caller: Caller, needs permission: Permission?, stepUp: Bool = false
    ) async throws
        -> (checked: CheckedSession, access: Access)
    {
        let (checked, ceiling) = try await authenticated(metadata, caller)
        try DirectoryService.requireUnrestricted(checked.session)
        let store = RoleStore(directory: identity.directory)
        guard let user = try crm.changes.read(.user, checked.session.user) else { throw SessionRefusal.unknown }
        var names: [String] = []
        if case .texts(let held)? = try crm.changes.open(user.record, fields: ["roles"])["roles"] { names = held }
        let access = Access(roles: try store.roles(names), ceiling: ceiling?.map(\.role))
        if let permission, !access.permissions.contains(permission) {
            await auditDenied(checked.session.user, caller, "needs the permission \(permission.rawValue)")
            throw RPCError(code: .permissionDenied, message: "this needs the permission \(permission.rawValue)")
        }
        if stepUp { try requireStepUp(checked, try identity.directory.credentials(of: checked.session.user)) }
        return (checked, access)
    }

    /// Records that a signed-in `user`'s call was refused (`access.denied`), without waiting:
    /// the refusal releases nothing. A full audit queue is the only way it is not recorded.
    func auditDenied(_ user: CRMID, _ caller: Caller, _ reason: String) async {
        let entry = AuditEntry(
            action: "access.denied", actor: DirectoryChanges.owner(of: user), application: caller.owner,
            outcome: .denied, reason: reason)
        try? await audit.record([entry], wait: false)
    }

    /// Proposes `transaction` as the session's `user`, with its audit entry (`action` on
    /// `records`); a failed condition means a concurrent change.
    func commit(
        _ transaction: Transaction, _ caller: Caller, as user: CRMID, _ action: String, records: [CRMID] = [],
        reason: String = ""
    ) async throws {
        let audit = AuditEntry(
            action: action, actor: DirectoryChanges.owner(of: user), application: caller.owner, records: records,
            reason: reason)
        guard case .applied = try await crm.propose(transaction, caller: caller, audit: audit) else {
            throw RPCError(code: .aborted, message: "it changed meanwhile; read it again and retry")
        }
    }

    func userInfo(_ id: CRMID) throws -> Crm_V1_UserInfo {
        guard let user = try crm.changes.read(.user, id) else { throw RecordError.notFound(.user, id) }
        let fields = try crm.changes.open(user.record, fields: ["username", "status", "roles"])
        var info = Crm_V1_UserInfo()
        info.userID = id.description
        if case .text(let name)? = fields["username"] { info.username = name }
        if case .text(let status)? = fields["status"] { info.status = status }
        if case .texts(let roles)? = fields["roles"] { info.roles = roles }
        info.teams = user.record.teams.map(\.description)
        info.locked = try identity.throttles().account(id)?.0.locked ?? false
        info.readsStopped = try ReadHolds(kv: crm.changes.kv, workspace: crm.changes.workspace).isHeld(id)
        return info
    }

    func createUser(
        _ message: Crm_V1_CreateUserRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_UserInfo
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.createUser(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin)
            let imported = !message.importedPasswordHash.isEmpty
            if imported {
                guard message.password.isEmpty else {
                    throw RecordError.badRequest("give either `password` or `imported_password_hash`")
                }
                do { _ = try StoredPassword(parsing: message.importedPasswordHash) } catch let error
                    as StoredPasswordError
                {
                    throw RecordError.badRequest(error.description)
                }
            } else if let refusal = PasswordPolicy().refusal(
                of: message.password, username: message.username, email: message.email.isEmpty ? nil : message.email)
            {
                throw refusal
            }
            let store = RoleStore(directory: identity.directory)
            let roles = try message.roles.map { name in
                guard let role = try store.role(name)?.role else {
                    throw RecordError.badRequest("there is no role `\(name.prefix(64))`")
                }
                return role
            }
            if let problem = SeparationOfDuties.violations(of: roles).first {
                throw RecordError.badRequest(
                    "user \(message.username.prefix(64)) would break the separation of duties: \(problem)")
            }
            let teams = try message.teams.map { try RecordsProto.id($0, "teams") }
            let teamPins = try TeamStore(directory: identity.directory).joinable(teams)
            let id = try CRMID.random()
            let hash =
                imported ? message.importedPasswordHash : try await identity.passwordHasher().hash(message.password)
            // An imported password is the user's own; an initial one is changed at first sign-in.
            let credentials = Credentials(passwordHash: hash, mustChangePassword: !imported)
            var transaction = try identity.directory.createUser(
                id: id, username: message.username,
                displayName: message.displayName.isEmpty ? nil : message.displayName,
                email: message.email.isEmpty ? nil : message.email, roles: message.roles, teams: teams,
                credentials: credentials, principal: DirectoryChanges.owner(of: checked.session.user),
                now: crm.local.nowMillis())
            transaction.conditions += teamPins
            try await commit(transaction, caller, as: checked.session.user, "user.create", records: [id])
            return try userInfo(id)
        }
    }

    func listUsers(
        _ message: Crm_V1_ListUsersRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_ListUsersResponse
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.listUsers(message, metadata: metadata)
        } lead: { caller in
            _ = try await acting(metadata, caller, needs: .userAdmin)
            var response = Crm_V1_ListUsersResponse()
            var after: [UInt8]?
            for _ in 0..<20 {
                let page = try crm.changes.list(
                    ListQuery(entity: .user, includeDeleted: true, pageSize: 500), after: after)
                response.users += try page.records.map { try userInfo($0.record.id) }
                guard let next = page.resumeAfter else { break }
                after = next
            }
            return response
        }
    }

    func setUserStatus(
        _ message: Crm_V1_SetUserStatusRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_UserInfo
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.setUserStatus(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin)
            let id = try RecordsProto.id(message.userID, "user_id")
            guard ["active", "disabled"].contains(message.status) else {
                throw RecordError.badRequest("`status` is active or disabled")
            }
            guard id != checked.session.user else {
                throw RecordError.badRequest("nobody disables or enables themselves")
            }
            guard let user = try crm.changes.read(.user, id),
                let credentials = try identity.directory.credentials(of: id)
            else { throw RecordError.notFound(.user, id) }
            var transaction = try crm.changes.update(user, set: ["status": .text(message.status)], clear: [])
            if message.status == "disabled" {
                let raise = identity.directory.raiseCredentialEpoch(of: id, from: credentials)
                transaction.conditions += raise.conditions
                transaction.operations += raise.operations
            }
            try await commit(
                transaction, caller, as: checked.session.user,
                message.status == "disabled" ? "user.disable" : "user.enable", records: [id])
            return try userInfo(id)
        }
    }

    func unlockUser(
        _ message: Crm_V1_UnlockUserRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_UserInfo {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.unlockUser(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin)
            let id = try RecordsProto.id(message.userID, "user_id")
            guard id != checked.session.user else {
                throw RPCError(code: .permissionDenied, message: "nobody unlocks themselves; ask another administrator")
            }
            guard try crm.changes.read(.user, id) != nil else { throw RecordError.notFound(.user, id) }
            let throttles = try identity.throttles()
            let holds = ReadHolds(kv: crm.changes.kv, workspace: crm.changes.workspace)
            try await commit(
                Transaction(operations: [throttles.cleared(id), holds.lift(id)]), caller, as: checked.session.user,
                "user.unlock", records: [id])
            return try userInfo(id)
        }
    }

    func assignRoles(
        _ message: Crm_V1_AssignRolesRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_UserInfo
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.assignRoles(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .roleAdmin, stepUp: true)
            let id = try RecordsProto.id(message.userID, "user_id")
            try await commit(
                try RoleStore(directory: identity.directory).assign(
                    message.roles, to: id, by: DirectoryChanges.owner(of: checked.session.user)), caller,
                as: checked.session.user, "user.roles", records: [id], reason: message.roles.joined(separator: ","))
            return try userInfo(id)
        }
    }

    func putRole(
        _ message: Crm_V1_PutRoleRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_RoleInfo
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.putRole(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .roleAdmin, stepUp: true)
            let store = RoleStore(directory: identity.directory)
            let name = try store.parse(message.yaml).name
            try await commit(
                try store.put(yaml: message.yaml), caller, as: checked.session.user, "role.put", reason: name)
            var info = Crm_V1_RoleInfo()
            info.name = name
            info.yaml = message.yaml
            return info
        }
    }

    func getRole(
        _ message: Crm_V1_GetRoleRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_RoleInfo
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.getRole(message, metadata: metadata)
        } lead: { caller in
            _ = try await acting(metadata, caller, needs: .roleAdmin)
            guard let yaml = try RoleStore(directory: identity.directory).yaml(message.name) else {
                throw RPCError(code: .notFound, message: "there is no role `\(message.name.prefix(64))`")
            }
            var info = Crm_V1_RoleInfo()
            info.name = message.name
            info.yaml = yaml
            return info
        }
    }

    func listRoles(
        _ message: Crm_V1_ListRolesRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_ListRolesResponse
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.listRoles(message, metadata: metadata)
        } lead: { caller in
            _ = try await acting(metadata, caller, needs: .roleAdmin)
            var response = Crm_V1_ListRolesResponse()
            response.names = try RoleStore(directory: identity.directory).names()
            return response
        }
    }

    func deleteRole(
        _ message: Crm_V1_DeleteRoleRequest, _ access: RecordsService.Call, _ metadata: Metadata
    )
        async throws -> Crm_V1_DeleteRoleResponse
    {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.deleteRole(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .roleAdmin, stepUp: true)
            try await commit(
                try RoleStore(directory: identity.directory).delete(message.name), caller, as: checked.session.user,
                "role.delete", reason: message.name)
            return Crm_V1_DeleteRoleResponse()
        }
    }

    func explainAccess(
        _ message: Crm_V1_ExplainAccessRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_ExplainAccessResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.explainAccess(message, metadata: metadata)
        } lead: { caller in
            let id = try RecordsProto.id(message.userID, "user_id")
            let (checked, mine) = try await acting(metadata, caller, needs: nil)
            guard id == checked.session.user || mine.permissions.contains(.roleAdmin) else {
                throw RPCError(code: .permissionDenied, message: "this needs the permission role.admin")
            }
            let entity = try RecordsProto.entity(message.entity)
            guard let action = ObjectAction(rawValue: message.action) else {
                throw RecordError.badRequest("`action` is create, read, update, delete or destroy")
            }
            let info = try userInfo(id)
            let theirs = Access(roles: try RoleStore(directory: identity.directory).roles(info.roles), ceiling: nil)
            var response = Crm_V1_ExplainAccessResponse()
            let scope = theirs.explainScope(action, on: entity)
            response.scope = scope.value.rawValue
            response.scopeReason = scope.reason
            if !message.field.isEmpty {
                guard let field = try crm.changes.definition(entity).field(named: message.field) else {
                    throw RecordError.unknownField(entity: entity, name: message.field)
                }
                let decision = theirs.explainField(field, on: entity)
                response.fieldAccess = decision.value.rawValue
                response.fieldReason = decision.reason
            }
            if !message.recordID.isEmpty {
                let record = try RecordsProto.id(message.recordID, "record_id")
                guard let found = try crm.changes.read(entity, record) else {
                    throw RecordError.notFound(entity, record)
                }
                let user = try crm.changes.read(.user, id)
                let (reached, reason) = try Self.explainReach(
                    action, found.record, scope: scope.value, user: id, teams: Set(user?.record.teams ?? []),
                    shares: RecordShares(records: crm.changes))
                response.recordReached = reached
                response.recordReason = reason
            }
            return response
        }
    }

    /// Whether `action` with `scope` reaches `record` for `user` in `teams`, and why.
    static func explainReach(
        _ action: ObjectAction, _ record: StoredRecord, scope: Scope, user: CRMID, teams: Set<CRMID>,
        shares: RecordShares
    ) throws -> (Bool, String) {
        guard scope != .none else { return (false, "no scope for \(action.rawValue): denied before any record") }
        let owner = DirectoryChanges.owner(of: user)
        if scope == .all { return (true, "scope all reaches every record") }
        if record.owner == owner { return (true, "the user owns it (scope \(scope.rawValue))") }
        if scope == .team, let team = record.teams.first(where: teams.contains) {
            return (true, "it belongs to the user's team \(team) (scope team)")
        }
        for share in try shares.shares(of: record.entity, record.id) where share.access.allows(action) {
            switch share.grantee {
            case .user(let grantee) where grantee == user:
                return (true, "shared with the user: \(share.access.rawValue)")
            case .team(let team) where teams.contains(team):
                return (true, "shared with the user's team \(team): \(share.access.rawValue)")
            default: continue
            }
        }
        return (
            false,
            "outside scope \(scope.rawValue) (owned by another, not the user's team's) and not shared for \(action.rawValue)"
        )
    }

    // MARK: gRPC

    func createUser(
        request: ServerRequest<Crm_V1_CreateUserRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await createUser(request.message, try admit(request.metadata, context), request.metadata))
    }

    func listUsers(
        request: ServerRequest<Crm_V1_ListUsersRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListUsersResponse> {
        ServerResponse(
            message: try await listUsers(request.message, try admit(request.metadata, context), request.metadata))
    }

    func setUserStatus(
        request: ServerRequest<Crm_V1_SetUserStatusRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await setUserStatus(request.message, try admit(request.metadata, context), request.metadata))
    }

    func unlockUser(
        request: ServerRequest<Crm_V1_UnlockUserRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await unlockUser(request.message, try admit(request.metadata, context), request.metadata))
    }

    func assignRoles(
        request: ServerRequest<Crm_V1_AssignRolesRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await assignRoles(request.message, try admit(request.metadata, context), request.metadata))
    }

    func putRole(
        request: ServerRequest<Crm_V1_PutRoleRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RoleInfo> {
        ServerResponse(
            message: try await putRole(request.message, try admit(request.metadata, context), request.metadata))
    }

    func getRole(
        request: ServerRequest<Crm_V1_GetRoleRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RoleInfo> {
        ServerResponse(
            message: try await getRole(request.message, try admit(request.metadata, context), request.metadata))
    }

    func listRoles(
        request: ServerRequest<Crm_V1_ListRolesRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListRolesResponse> {
        ServerResponse(
            message: try await listRoles(request.message, try admit(request.metadata, context), request.metadata))
    }

    func deleteRole(
        request: ServerRequest<Crm_V1_DeleteRoleRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DeleteRoleResponse> {
        ServerResponse(
            message: try await deleteRole(request.message, try admit(request.metadata, context), request.metadata))
    }

    func explainAccess(
        request: ServerRequest<Crm_V1_ExplainAccessRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ExplainAccessResponse> {
        ServerResponse(
            message: try await explainAccess(request.message, try admit(request.metadata, context), request.metadata))
    }
}
