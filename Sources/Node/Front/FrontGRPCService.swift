import CRMProto
import GRPCCore
import Transport

/// The gRPC client API (`crm.v1.KV`) on the front listener: the same service as a member's,
/// answered for the whole cluster. Each call is checked against its client's rate limit first.
struct FrontGRPCService: Crm_V1_KV.SimpleServiceProtocol {
    let front: FrontKV
    let limiter: RateLimiter
    let authorization: Authorization
    let memberState: @Sendable () -> Crm_V1_MemberStateResponse
    let metrics: FrontMetrics

    @discardableResult
    private func admit(_ context: ServerContext) throws -> Caller {
        let identity = try authorization.requireClient(context)
        do {
            try limiter.require(identity)
        } catch {
            metrics.rateLimited()
            throw error
        }
        return Caller(identity: identity)
    }

    func get(request: Crm_V1_GetRequest, context: ServerContext) async throws -> Crm_V1_GetResponse {
        try admit(context)
        return try await front.get(request)
    }

    func range(request: Crm_V1_RangeRequest, context: ServerContext) async throws -> Crm_V1_RangeResponse {
        try admit(context)
        return try await front.range(request)
    }

    func put(request: Crm_V1_PutRequest, context: ServerContext) async throws -> Crm_V1_PutResponse {
        let caller = try admit(context)
        return try await front.put(request, caller: caller)
    }

    func delete(request: Crm_V1_DeleteRequest, context: ServerContext) async throws -> Crm_V1_DeleteResponse {
        let caller = try admit(context)
        return try await front.delete(request, caller: caller)
    }

    func compareAndSwap(
        request: Crm_V1_CompareAndSwapRequest, context: ServerContext
    ) async throws -> Crm_V1_CompareAndSwapResponse {
        let caller = try admit(context)
        return try await front.compareAndSwap(request, caller: caller)
    }

    func openSession(
        request: Crm_V1_OpenSessionRequest, context: ServerContext
    ) async throws -> Crm_V1_OpenSessionResponse {
        let caller = try admit(context)
        return try await front.openSession(request, caller: caller)
    }

    func closeSession(
        request: Crm_V1_CloseSessionRequest, context: ServerContext
    ) async throws -> Crm_V1_CloseSessionResponse {
        let caller = try admit(context)
        return try await front.closeSession(request, caller: caller)
    }

    /// This node's own member's state (the front itself has no role).
    func memberState(
        request: Crm_V1_MemberStateRequest, context: ServerContext
    ) async throws -> Crm_V1_MemberStateResponse {
        try admit(context)
        return memberState()
    }
}
