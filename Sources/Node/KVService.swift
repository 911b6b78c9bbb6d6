import CRMProto
import Foundation
import GRPCCore
import Logging
import Raft
import Transport

/// The client API (`crm.v1.KV`) on a member's client listener. A client's writes are proposed
/// on the leader or forwarded to it; a member's or front's call is refused with the leader's id
/// instead (see `Routing`). `MemberState` tells fronts how this member is.
///
/// Clients are held to the same per-identity rate as at the front (the fronts themselves, as
/// members, are not: they limit their own clients).
struct KVService: Crm_V1_KV.SimpleServiceProtocol {
    let local: LocalKV
    let authorization: Authorization
    let limiter: RateLimiter
    let memberState: @Sendable () -> Crm_V1_MemberStateResponse

    private func routing(_ context: ServerContext) throws -> Routing {
        let identity = try authorization.requireClient(context)
        if case .member = identity { return .refuse }
        try limiter.require(identity)
        return .forwardToLeader
    }

    func get(request: Crm_V1_GetRequest, context: ServerContext) async throws -> Crm_V1_GetResponse {
        try await local.get(request, routing: try routing(context))
    }

    func range(request: Crm_V1_RangeRequest, context: ServerContext) async throws -> Crm_V1_RangeResponse {
        try await local.range(request, routing: try routing(context))
    }

    func put(request: Crm_V1_PutRequest, context: ServerContext) async throws -> Crm_V1_PutResponse {
        try await local.put(request, routing: try routing(context))
    }

    func delete(request: Crm_V1_DeleteRequest, context: ServerContext) async throws -> Crm_V1_DeleteResponse {
        try await local.delete(request, routing: try routing(context))
    }

    func compareAndSwap(request: Crm_V1_CompareAndSwapRequest, context: ServerContext) async throws -> Crm_V1_CompareAndSwapResponse {
        try await local.compareAndSwap(request, routing: try routing(context))
    }

    func openSession(request: Crm_V1_OpenSessionRequest, context: ServerContext) async throws -> Crm_V1_OpenSessionResponse {
        try await local.openSession(request, routing: try routing(context))
    }

    func closeSession(request: Crm_V1_CloseSessionRequest, context: ServerContext) async throws -> Crm_V1_CloseSessionResponse {
        try await local.closeSession(request, routing: try routing(context))
    }

    func memberState(request: Crm_V1_MemberStateRequest, context: ServerContext) async throws -> Crm_V1_MemberStateResponse {
        _ = try routing(context)
        return memberState()
    }
}
