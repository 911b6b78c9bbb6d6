import CRM
import CRMProto
import GRPCCore
import Identity
import KVStore

/// Applications' principal records through the admin API (the infrastructure's operators, on
/// the leader): what users may do through each client certificate, its expiry, and blocking.
extension AdminService {
    func putPrincipal(
        request: Crm_V1_PutPrincipalRequest, context: ServerContext
    ) async throws -> Crm_V1_PrincipalInfo {
        let caller = try leaderAdmin(context)
        return try await crm.mapped {
            let principals = PrincipalChanges(records: crm.changes)
            let given = request.principal
            var principal = Principal(name: given.name, ceiling: given.ceiling)
            principal.mayAssertAddress = given.mayAssertAddress
            principal.expiresAtMillis = given.expiresAtMillis == 0 ? nil : given.expiresAtMillis
            principal.blocked = given.blocked
            let current = try principals.read(given.name)
            principal.lastUsedMillis = current?.principal.lastUsedMillis ?? 0
            try await crm.ensureKeySet(caller: caller)
            try await commit(
                try principals.put(principal, replacing: current?.version), caller,
                caller.audit("principal.put", reason: principal.name))
            return Self.info(principal)
        }
    }

    func listPrincipals(
        request: Crm_V1_ListPrincipalsRequest, context: ServerContext
    ) async throws -> Crm_V1_ListPrincipalsResponse {
        _ = try authorization.requireAdmin(context)
        try crm.checkServing()
        try await crm.waitForRead(serializable: false)
        return try await crm.mapped {
            var response = Crm_V1_ListPrincipalsResponse()
            response.principals = try PrincipalChanges(records: crm.changes).list().map(Self.info)
            return response
        }
    }

    func setPrincipalBlocked(
        request: Crm_V1_SetPrincipalBlockedRequest, context: ServerContext
    ) async throws -> Crm_V1_PrincipalInfo {
        let caller = try leaderAdmin(context)
        return try await crm.mapped {
            let principals = PrincipalChanges(records: crm.changes)
            guard let (found, version) = try principals.read(request.name) else {
                throw RPCError(code: .notFound, message: "no principal \(request.name.prefix(128))")
            }
            var principal = found
            principal.blocked = request.blocked
            try await commit(
                try principals.put(principal, replacing: version), caller,
                caller.audit(request.blocked ? "principal.block" : "principal.unblock", reason: principal.name))
            return Self.info(principal)
        }
    }

    func leaderAdmin(_ context: ServerContext) throws -> Caller {
        let admin = try authorization.requireAdmin(context)
        guard crm.isLeader else { throw LocalKV.rpcError(.notLeader(leaderHint: crm.leaderHint)) }
        try crm.checkServing()
        return Caller(identity: .client(admin))
    }

    private func commit(_ transaction: Transaction, _ caller: Caller, _ audit: AuditEntry) async throws {
        guard case .applied = try await crm.propose(transaction, caller: caller, audit: audit) else {
            throw RPCError(code: .aborted, message: "the principal changed meanwhile; try again")
        }
    }

    static func info(_ principal: Principal) -> Crm_V1_PrincipalInfo {
        var info = Crm_V1_PrincipalInfo()
        info.name = principal.name
        info.ceiling = principal.ceiling
        info.mayAssertAddress = principal.mayAssertAddress
        info.expiresAtMillis = principal.expiresAtMillis ?? 0
        info.blocked = principal.blocked
        info.lastUsedMillis = principal.lastUsedMillis
        return info
    }
}
