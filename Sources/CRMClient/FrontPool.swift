import CRMProto
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

/// A client of the cluster through a list of fronts (any node's front answers for the whole
/// cluster). Calls go to one front; when it cannot be reached, the next one is tried — for
/// reads, and for writes numbered in a session (which apply at most once however often they
/// are sent). A write without a session is not sent twice: its error is returned, since the
/// first front may have applied it.
public final class FrontPool: Sendable {
    public let endpoints: [Endpoint]
    private let connections: [MemberConnection]
    private let current = Mutex<Int>(0)

    /// With `bearerToken`, calls act in that signed-in user's session.
    public init(_ endpoints: [Endpoint], tls: ClientTLSFiles, bearerToken: String? = nil) throws {
        precondition(!endpoints.isEmpty, "a front pool needs at least one front")
        self.endpoints = endpoints
        connections = try endpoints.map {
            try MemberConnection(host: $0.host, port: $0.port, tls: tls, bearerToken: bearerToken)
        }
        current.withLock { $0 = Int.random(in: 0..<endpoints.count) }
    }

    /// The front calls are going to now.
    public var currentEndpoint: Endpoint { endpoints[current.withLock { $0 }] }

    /// Runs `call` on the current front, moving on to the next while fronts are unreachable
    /// (each tried once) if `retryable`.
    public func call<Response: Sendable>(
        retryable: Bool, _ call: (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>) async throws -> Response
    ) async throws -> Response {
        var lastError: (any Error)?
        for _ in 0..<connections.count {
            let index = current.withLock { $0 }
            do {
                return try await call(connections[index].kv)
            } catch let error as RPCError where error.code == .unavailable && Self.isUnreachable(error) {
                lastError = error
                guard retryable else { throw error }
                current.withLock { if $0 == index { $0 = (index + 1) % connections.count } }
            }
        }
        throw lastError ?? RPCError(code: .unavailable, message: "no front could be reached")
    }

    /// A records call on the current front, moving on to the next one that can be reached.
    /// Every records call may be sent again: creates carry a request id, changes an expected
    /// version, so none applies twice.
    public func records<Response: Sendable>(
        _ call: (Crm_V1_Records.Client<HTTP2ClientTransport.Posix>) async throws -> Response
    ) async throws -> Response {
        var lastError: (any Error)?
        for _ in 0..<connections.count {
            let index = current.withLock { $0 }
            do {
                return try await call(connections[index].records)
            } catch let error as RPCError where error.code == .unavailable && Self.isUnreachable(error) {
                lastError = error
                current.withLock { if $0 == index { $0 = (index + 1) % connections.count } }
            }
        }
        throw lastError ?? RPCError(code: .unavailable, message: "no front could be reached")
    }

    public func get(_ request: Crm_V1_GetRequest, options: CallOptions = .defaults) async throws -> Crm_V1_GetResponse {
        try await call(retryable: true) { try await $0.get(request, options: options) }
    }

    public func range(
        _ request: Crm_V1_RangeRequest, options: CallOptions = .defaults
    ) async throws -> Crm_V1_RangeResponse {
        try await call(retryable: true) { try await $0.range(request, options: options) }
    }

    public func put(_ request: Crm_V1_PutRequest, options: CallOptions = .defaults) async throws -> Crm_V1_PutResponse {
        try await call(retryable: request.hasSession) { try await $0.put(request, options: options) }
    }

    public func delete(
        _ request: Crm_V1_DeleteRequest, options: CallOptions = .defaults
    ) async throws -> Crm_V1_DeleteResponse {
        try await call(retryable: request.hasSession) { try await $0.delete(request, options: options) }
    }

    public func compareAndSwap(
        _ request: Crm_V1_CompareAndSwapRequest, options: CallOptions = .defaults
    ) async throws -> Crm_V1_CompareAndSwapResponse {
        try await call(retryable: request.hasSession) { try await $0.compareAndSwap(request, options: options) }
    }

    /// An UNAVAILABLE that the front did not send itself (a front's own refusals name their
    /// cause in `crm-` metadata): the front's node is down or cut off.
    static func isUnreachable(_ error: RPCError) -> Bool {
        !error.metadata.contains { $0.key.hasPrefix("crm-") }
    }

    public func close() async {
        for connection in connections { await connection.close() }
    }
}
