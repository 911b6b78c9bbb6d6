import CRMProto
import GRPCCore
import Logging
import Transport

/// The cluster's KV API as the front offers it: each call routed by `FrontRouter`, writes
/// without a session given one of the front's own (see `SessionPool`).
final class FrontKV: Sendable {
    let router: FrontRouter
    let sessions: SessionPool
    /// The front's own identity (its member's): the owner of the pool's sessions.
    let own: Caller
    private let logger: Logger

    init(router: FrontRouter, sessions: SessionPool, logger: Logger) {
        self.router = router
        self.sessions = sessions
        own = Caller(identity: .member(router.selfID))
        self.logger = logger
    }

    func get(_ request: Crm_V1_GetRequest) async throws -> Crm_V1_GetResponse {
        try LocalKV.check(key: request.key)
        let kind: FrontCall<Crm_V1_GetResponse>.Kind =
            request.consistency == .serializable ? .serializableRead : .linearizableRead
        return try await router.run(
            FrontCall(
                kind: kind, retryable: true,
                local: { try await $0.get(request, routing: $1) },
                remote: { try await $0.get(request, options: $1) },
                header: { $0.header }), operation: "get")
    }

    func range(_ request: Crm_V1_RangeRequest) async throws -> Crm_V1_RangeResponse {
        let kind: FrontCall<Crm_V1_RangeResponse>.Kind =
            request.consistency == .serializable ? .serializableRead : .linearizableRead
        return try await router.run(
            FrontCall(
                kind: kind, retryable: true,
                local: { try await $0.range(request, routing: $1) },
                remote: { try await $0.range(request, options: $1) },
                header: { $0.header }), operation: "range")
    }

    func put(_ request: Crm_V1_PutRequest, caller: Caller) async throws -> Crm_V1_PutResponse {
        try await sessioned(
            request, has: request.hasSession, caller: caller, tag: { $0.session = $1 }, operation: "put"
        ) { request, retryable, caller in
            FrontCall(
                kind: .write, retryable: retryable,
                local: { try await $0.put(request, caller: caller, routing: $1) },
                remote: { try await $0.put(request, metadata: caller.forwarding, options: $1) },
                header: { $0.header })
        }
    }

    func delete(_ request: Crm_V1_DeleteRequest, caller: Caller) async throws -> Crm_V1_DeleteResponse {
        try await sessioned(
            request, has: request.hasSession, caller: caller, tag: { $0.session = $1 }, operation: "delete"
        ) { request, retryable, caller in
            FrontCall(
                kind: .write, retryable: retryable,
                local: { try await $0.delete(request, caller: caller, routing: $1) },
                remote: { try await $0.delete(request, metadata: caller.forwarding, options: $1) },
                header: { $0.header })
        }
    }

    func compareAndSwap(
        _ request: Crm_V1_CompareAndSwapRequest, caller: Caller
    ) async throws -> Crm_V1_CompareAndSwapResponse {
        try await sessioned(
            request, has: request.hasSession, caller: caller, tag: { $0.session = $1 }, operation: "cas"
        ) { request, retryable, caller in
            FrontCall(
                kind: .write, retryable: retryable,
                local: { try await $0.compareAndSwap(request, caller: caller, routing: $1) },
                remote: { try await $0.compareAndSwap(request, metadata: caller.forwarding, options: $1) },
                header: { $0.header })
        }
    }

    /// Opening is sent again only when refused (a retried open could leave an unused session,
    /// which expires on its own).
    func openSession(
        _ request: Crm_V1_OpenSessionRequest, caller: Caller, deadline: UInt64? = nil
    ) async throws -> Crm_V1_OpenSessionResponse {
        try await router.run(
            FrontCall(
                kind: .write, retryable: false,
                local: { try await $0.openSession(request, caller: caller, routing: $1) },
                remote: { try await $0.openSession(request, metadata: caller.forwarding, options: $1) },
                header: { $0.header }), operation: "open_session", deadline: deadline)
    }

    func closeSession(_ request: Crm_V1_CloseSessionRequest, caller: Caller) async throws -> Crm_V1_CloseSessionResponse
    {
        try await router.run(
            FrontCall(
                kind: .write, retryable: false,
                local: { try await $0.closeSession(request, caller: caller, routing: $1) },
                remote: { try await $0.closeSession(request, metadata: caller.forwarding, options: $1) },
                header: { $0.header }), operation: "close_session")
    }

    /// Runs a write: as given when the client numbered it in its own session (the client's);
    /// otherwise in one of the front's sessions (the front's own), so that it can be retried
    /// safely. A session the cluster forgot (it expired) means the write was not applied: it is
    /// sent again in a fresh session. Every step shares the request's one deadline.
    private func sessioned<Request: Sendable, Response: Sendable>(
        _ request: Request, has session: Bool, caller: Caller, tag: (inout Request, Crm_V1_WriteSession) -> Void,
        operation: String,
        call: (Request, Bool, Caller) -> FrontCall<Response>
    ) async throws -> Response {
        let deadline = router.deadlineFromNow()
        if session {
            return try await router.run(call(request, true, caller), operation: operation, deadline: deadline)
        }
        let own = self.own
        for _ in 0..<2 {
            guard
                let lease = await sessions.acquire(open: {
                    try await self.openSession(Crm_V1_OpenSessionRequest(), caller: own, deadline: deadline).sessionID
                })
            else { break }
            var tagged = request
            tag(&tagged, lease.writeSession)
            do {
                let response = try await router.run(call(tagged, true, own), operation: operation, deadline: deadline)
                sessions.release(lease)
                return response
            } catch let error as RPCError
                where error.code == .failedPrecondition
                && error.metadata[stringValues: "crm-unknown-session"].contains(where: { _ in true })
            {
                sessions.discard(lease)
                logger.info(
                    "a front session expired; sending the write in a new one",
                    metadata: ["session": "\(lease.sessionID)"])
            } catch {
                sessions.release(lease)
                throw error
            }
        }
        // No session to be had: sent once more only if refused.
        return try await router.run(call(request, false, caller), operation: operation, deadline: deadline)
    }

    /// Closes the front's sessions (at shutdown), best effort.
    func closeSessions() async {
        for id in sessions.drain() {
            var request = Crm_V1_CloseSessionRequest()
            request.sessionID = id
            _ = try? await closeSession(request, caller: own)
        }
    }
}
