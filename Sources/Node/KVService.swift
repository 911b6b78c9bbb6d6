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
struct KVService: Crm_V1_KV.ServiceProtocol {
    let local: LocalKV
    let authorization: Authorization
    let limiter: RateLimiter
    let memberState: @Sendable () -> Crm_V1_MemberStateResponse

    /// How the call is routed, and for whom: a member's call is answered here (refused on a
    /// follower), a client's is rate-limited and forwarded to the leader when needed. A member
    /// passing a client's call on names the client, whose sessions it uses.
    private func admit(_ metadata: Metadata, _ context: ServerContext) throws -> (Routing, Caller) {
        let identity = try authorization.requireClient(context)
        let caller = Caller.of(identity, metadata: metadata)
        if case .member = identity { return (.refuse, caller) }
        try limiter.require(identity)
        return (.forwardToLeader, caller)
    }

    func get(
        request: ServerRequest<Crm_V1_GetRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_GetResponse> {
        let (routing, _) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.get(request.message, routing: routing))
    }

    func range(
        request: ServerRequest<Crm_V1_RangeRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RangeResponse> {
        let (routing, _) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.range(request.message, routing: routing))
    }

    func put(
        request: ServerRequest<Crm_V1_PutRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_PutResponse> {
        let (routing, caller) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.put(request.message, caller: caller, routing: routing))
    }

    func delete(
        request: ServerRequest<Crm_V1_DeleteRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_DeleteResponse> {
        let (routing, caller) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.delete(request.message, caller: caller, routing: routing))
    }

    func compareAndSwap(
        request: ServerRequest<Crm_V1_CompareAndSwapRequest>,
        context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_CompareAndSwapResponse> {
        let (routing, caller) = try admit(request.metadata, context)
        return ServerResponse(
            message: try await local.compareAndSwap(request.message, caller: caller, routing: routing))
    }

    func openSession(
        request: ServerRequest<Crm_V1_OpenSessionRequest>,
        context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_OpenSessionResponse> {
        let (routing, caller) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.openSession(request.message, caller: caller, routing: routing))
    }

    func closeSession(
        request: ServerRequest<Crm_V1_CloseSessionRequest>,
        context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_CloseSessionResponse> {
        let (routing, caller) = try admit(request.metadata, context)
        return ServerResponse(message: try await local.closeSession(request.message, caller: caller, routing: routing))
    }

    func memberState(
        request: ServerRequest<Crm_V1_MemberStateRequest>,
        context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_MemberStateResponse> {
        _ = try admit(request.metadata, context)
        return ServerResponse(message: memberState())
    }
}
