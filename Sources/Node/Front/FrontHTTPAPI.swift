import CRMProto
import Foundation
import GRPCCore
import Transport

/// Answers one HTTP/JSON request of the front (see `FrontJSON` for the surface): checks the
/// client's rate limit, decodes, calls `FrontKV`, encodes. No I/O of its own.
struct FrontHTTPAPI: Sendable {
    struct Reply: Sendable {
        var status: Int
        var body: Data
        var retryAfterSeconds: UInt64?
        /// The record version a records route answers with (the `ETag` header).
        var etag: UInt64?
    }

    let front: FrontKV
    let records: FrontRecordsHTTP?
    var auth: FrontAuthHTTP? = nil
    let limiter: RateLimiter
    let metrics: FrontMetrics
    let clusterView: @Sendable () -> FrontJSON.ClusterView

    func handle(
        method: String, path: String, query: String = "", ifMatch: String? = nil, authorization: [String] = [],
        clientAddress: String? = nil, body: Data, identity: PeerIdentity
    ) async -> Reply {
        let verdict = limiter.admit(identity.description)
        guard verdict.allowed else {
            metrics.rateLimited()
            var reply = Self.error(
                RPCError(
                    code: .resourceExhausted,
                    message:
                        "rate limited: \(identity) may make \(Int(limiter.rate)) requests a second (burst \(Int(limiter.burst))); retry after \(verdict.retryAfterMilliseconds) ms"
                ),
                retryAfterMilliseconds: verdict.retryAfterMilliseconds)
            reply.retryAfterSeconds = max(1, (verdict.retryAfterMilliseconds + 999) / 1000)
            return reply
        }
        let caller = Caller(identity: identity)
        if path.hasPrefix(FrontAuthHTTP.prefix), let auth {
            return await Self.answer {
                try await auth.handle(
                    method: method, path: path, query: query, authorization: authorization,
                    clientAddress: clientAddress, body: body,
                    identity: identity)
            }
        }
        if path.hasPrefix(FrontRecordsHTTP.prefix), let records {
            return await Self.answer {
                try await records.handle(
                    method: method, path: path, query: query, ifMatch: ifMatch, authorization: authorization,
                    clientAddress: clientAddress, body: body, identity: identity)
            }
        }
        return await Self.answer {
            switch (method, path) {
            case ("GET", "/v1/cluster"): return try Self.ok(clusterView())
            case ("POST", "/v1/kv/get"):
                return try Self.ok(try await get(try Self.decode(FrontJSON.GetRequest.self, body)))
            case ("POST", "/v1/kv/range"):
                return try Self.ok(try await range(try Self.decode(FrontJSON.RangeRequest.self, body)))
            case ("POST", "/v1/kv/put"):
                return try Self.ok(try await put(try Self.decode(FrontJSON.PutRequest.self, body), caller))
            case ("POST", "/v1/kv/delete"):
                return try Self.ok(try await delete(try Self.decode(FrontJSON.DeleteRequest.self, body), caller))
            case ("POST", "/v1/kv/cas"):
                return try Self.ok(
                    try await compareAndSwap(try Self.decode(FrontJSON.CompareAndSwapRequest.self, body), caller))
            case ("POST", "/v1/session/open"):
                let response = try await front.openSession(Crm_V1_OpenSessionRequest(), caller: caller)
                return try Self.ok(
                    FrontJSON.OpenSessionResponse(header: .init(response.header), sessionID: response.sessionID))
            case ("POST", "/v1/session/close"):
                let decoded = try Self.decode(FrontJSON.CloseSessionRequest.self, body)
                var request = Crm_V1_CloseSessionRequest()
                request.sessionID = decoded.sessionID
                return try Self.ok(
                    FrontJSON.WriteResponse(header: .init(try await front.closeSession(request, caller: caller).header))
                )
            case (_, "/v1/cluster"), (_, "/v1/kv/get"), (_, "/v1/kv/range"), (_, "/v1/kv/put"), (_, "/v1/kv/delete"),
                (_, "/v1/kv/cas"),
                (_, "/v1/session/open"), (_, "/v1/session/close"):
                return Self.error(
                    RPCError(
                        code: .invalidArgument,
                        message: "\(method) is not allowed on \(path); use \(path == "/v1/cluster" ? "GET" : "POST")"),
                    status: 405)
            default:
                return Self.error(
                    RPCError(
                        code: .notFound,
                        message:
                            "no such path \(path); the API is POST /v1/kv/{get,range,put,delete,cas}, POST /v1/session/{open,close}, GET /v1/cluster, /v1/records/..., /v1/auth/..."
                    ))
            }
        }
    }

    /// Runs a route, answering its errors: a stale `If-Match` is 412 with the current version,
    /// a missing one 428.
    private static func answer(_ route: () async throws -> Reply) async -> Reply {
        do {
            return try await route()
        } catch let stale as FrontRecordsHTTP.StaleVersion {
            var reply = Self.error(stale.error, status: 412)
            reply.etag = stale.current
            return reply
        } catch is FrontRecordsHTTP.PreconditionRequired {
            return Self.error(
                RPCError(
                    code: .failedPrecondition,
                    message: "this change needs `If-Match: \"<version>\"` with the version the change is based on"),
                status: 428)
        } catch let error as RPCError {
            return Self.error(error)
        } catch {
            return Self.error(RPCError(code: .internalError, message: "\(error)"))
        }
    }

    private func get(_ body: FrontJSON.GetRequest) async throws -> FrontJSON.GetResponse {
        var request = Crm_V1_GetRequest()
        request.key = body.key
        request.consistency = try FrontJSON.consistency(body.consistency)
        let response = try await front.get(request)
        return FrontJSON.GetResponse(
            header: .init(response.header), found: response.found, value: response.found ? response.value : nil)
    }

    private func range(_ body: FrontJSON.RangeRequest) async throws -> FrontJSON.RangeResponse {
        var request = Crm_V1_RangeRequest()
        request.from = body.from ?? Data()
        request.to = body.to ?? Data()
        request.limit = body.limit ?? 0
        request.consistency = try FrontJSON.consistency(body.consistency)
        let response = try await front.range(request)
        return FrontJSON.RangeResponse(
            header: .init(response.header), pairs: response.pairs.map { FrontJSON.Pair(key: $0.key, value: $0.value) },
            more: response.more)
    }

    private func put(_ body: FrontJSON.PutRequest, _ caller: Caller) async throws -> FrontJSON.WriteResponse {
        var request = Crm_V1_PutRequest()
        request.key = body.key
        request.value = body.value
        if let session = FrontJSON.writeSession(body.session) { request.session = session }
        return FrontJSON.WriteResponse(header: .init(try await front.put(request, caller: caller).header))
    }

    private func delete(_ body: FrontJSON.DeleteRequest, _ caller: Caller) async throws -> FrontJSON.WriteResponse {
        var request = Crm_V1_DeleteRequest()
        request.key = body.key
        if let session = FrontJSON.writeSession(body.session) { request.session = session }
        let response = try await front.delete(request, caller: caller)
        return FrontJSON.WriteResponse(header: .init(response.header), existed: response.existed)
    }

    private func compareAndSwap(
        _ body: FrontJSON.CompareAndSwapRequest, _ caller: Caller
    ) async throws -> FrontJSON.WriteResponse {
        var request = Crm_V1_CompareAndSwapRequest()
        request.key = body.key
        request.expectAbsent = body.expectAbsent ?? false
        request.expectedValue = body.expected ?? Data()
        request.deleteIfMatch = body.delete ?? false
        request.newValue = body.value ?? Data()
        guard request.expectAbsent != (body.expected != nil) else {
            throw RPCError(
                code: .invalidArgument,
                message: "give either \"expected\" (base64) or \"expect_absent\": true, not both or neither")
        }
        guard request.deleteIfMatch != (body.value != nil) else {
            throw RPCError(
                code: .invalidArgument,
                message: "give either \"value\" (base64) or \"delete\": true, not both or neither")
        }
        if let session = FrontJSON.writeSession(body.session) { request.session = session }
        let response = try await front.compareAndSwap(request, caller: caller)
        return FrontJSON.WriteResponse(header: .init(response.header), swapped: response.swapped)
    }

    // MARK: Encoding

    static func decode<T: Decodable>(_ type: T.Type, _ body: Data) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: body.isEmpty ? Data("{}".utf8) : body)
        } catch DecodingError.keyNotFound(let key, _) {
            throw RPCError(code: .invalidArgument, message: "the JSON body lacks \"\(key.stringValue)\"")
        } catch DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty {
            throw RPCError(
                code: .invalidArgument,
                message: "\"\(Self.place(context))\" is not valid (keys and values are base64 strings)")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            throw RPCError(
                code: .invalidArgument,
                message: Self.place(context).isEmpty
                    ? "the JSON body must be an object"
                    : "\"\(Self.place(context))\" has the wrong type (keys and values are base64 strings)")
        } catch {
            throw RPCError(code: .invalidArgument, message: "the body is not valid JSON")
        }
    }

    /// Where in the body a decoding error is, as the client wrote it ("session.id").
    private static func place(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    static func ok(_ value: some Encodable) throws -> Reply {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Reply(status: 200, body: try encoder.encode(value))
    }

    static func error(_ error: RPCError, status: Int? = nil, retryAfterMilliseconds: UInt64? = nil) -> Reply {
        let retry =
            retryAfterMilliseconds
            ?? error.metadata[stringValues: RefusalMetadata.retryAfter].first(where: { _ in true }).flatMap {
                UInt64($0)
            }
        let body = FrontJSON.ErrorBody(
            error: .init(
                code: FrontJSON.codeName(error.code), message: error.message, retryAfterMilliseconds: retry,
                refused: RefusalMetadata.isRefusal(error) ? true : nil,
                leaderID: RefusalMetadata.leaderHint(error)))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data =
            (try? encoder.encode(body))
            ?? Data("{\"error\":{\"code\":\"INTERNAL\",\"message\":\"encoding failed\"}}".utf8)
        return Reply(
            status: status ?? FrontJSON.httpStatus(error), body: data,
            retryAfterSeconds: retry.map { max(1, ($0 + 999) / 1000) })
    }
}
