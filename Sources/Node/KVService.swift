import CRMProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KVStore
import Logging
import Raft

/// The client API (`crm.v1.KV`) on any member: writes are proposed on the leader or forwarded
/// to it, linearizable reads wait for a ReadIndex, serializable reads are served locally.
struct KVService: Crm_V1_KV.SimpleServiceProtocol {
    let engine: RaftEngine
    let forwarder: LeaderForwarder
    let authorization: Authorization
    let requestTimeoutMilliseconds: Int
    let logger: Logger

    // MARK: Reads

    func get(request: Crm_V1_GetRequest, context: ServerContext) async throws -> Crm_V1_GetResponse {
        _ = try authorization.requireClient(context)
        try Self.check(key: request.key)
        try await waitForRead(request.consistency)
        let value = try storage { try engine.kv.get(Array(request.key)) }
        var response = Crm_V1_GetResponse()
        response.header = header()
        response.found = value != nil
        response.value = Data(value ?? [])
        return response
    }

    func range(request: Crm_V1_RangeRequest, context: ServerContext) async throws -> Crm_V1_RangeResponse {
        _ = try authorization.requireClient(context)
        let limit = request.limit == 0 ? 1000 : Int(request.limit)
        guard (1...KVLimits.maxRangeLimit).contains(limit) else {
            throw RPCError(code: .invalidArgument, message: "limit must be 1 to \(KVLimits.maxRangeLimit)")
        }
        try await waitForRead(request.consistency)
        let page = try storage {
            try engine.kv.range(from: Array(request.from), to: request.to.isEmpty ? nil : Array(request.to), limit: limit)
        }
        var response = Crm_V1_RangeResponse()
        response.header = header()
        response.pairs = page.pairs.map { pair in
            var item = Crm_V1_KeyValue()
            item.key = Data(pair.key)
            item.value = Data(pair.value)
            return item
        }
        response.more = page.more
        return response
    }

    private func waitForRead(_ consistency: Crm_V1_ReadConsistency) async throws {
        switch consistency {
        case .serializable: return
        case .linearizable: try await retryingElection { try await engine.waitForLinearizableRead() }
        case .UNRECOGNIZED(let value): throw RPCError(code: .invalidArgument, message: "unknown read consistency \(value)")
        }
    }

    // MARK: Writes

    func put(request: Crm_V1_PutRequest, context: ServerContext) async throws -> Crm_V1_PutResponse {
        _ = try authorization.requireClient(context)
        let write = KVWrite.put(key: Array(request.key), value: Array(request.value))
        let outcome = try await submit(write, session: request.hasSession ? request.session : nil) { leader in
            try await leader.put(request).header
        }
        var response = Crm_V1_PutResponse()
        response.header = outcome.header
        return response
    }

    func delete(request: Crm_V1_DeleteRequest, context: ServerContext) async throws -> Crm_V1_DeleteResponse {
        _ = try authorization.requireClient(context)
        var forwarded: Crm_V1_DeleteResponse?
        let outcome = try await submit(.delete(key: Array(request.key)), session: request.hasSession ? request.session : nil) { leader in
            let response = try await leader.delete(request)
            forwarded = response
            return response.header
        }
        if let forwarded { return forwarded }
        var response = Crm_V1_DeleteResponse()
        response.header = outcome.header
        if case .deleted(let existed)? = outcome.outcome { response.existed = existed }
        return response
    }

    func compareAndSwap(request: Crm_V1_CompareAndSwapRequest, context: ServerContext) async throws -> Crm_V1_CompareAndSwapResponse {
        _ = try authorization.requireClient(context)
        let write = KVWrite.compareAndSwap(key: Array(request.key), expected: request.expectAbsent ? nil : Array(request.expectedValue),
                                           new: request.deleteIfMatch ? nil : Array(request.newValue))
        var forwarded: Crm_V1_CompareAndSwapResponse?
        let outcome = try await submit(write, session: request.hasSession ? request.session : nil) { leader in
            let response = try await leader.compareAndSwap(request)
            forwarded = response
            return response.header
        }
        if let forwarded { return forwarded }
        var response = Crm_V1_CompareAndSwapResponse()
        response.header = outcome.header
        if case .compareAndSwap(let swapped)? = outcome.outcome { response.swapped = swapped }
        return response
    }

    func openSession(request: Crm_V1_OpenSessionRequest, context: ServerContext) async throws -> Crm_V1_OpenSessionResponse {
        _ = try authorization.requireClient(context)
        var forwarded: Crm_V1_OpenSessionResponse?
        let outcome = try await propose(.openSession(proposedAtMillis: Self.nowMillis())) { leader in
            let response = try await leader.openSession(request)
            forwarded = response
            return response.header
        }
        if let forwarded { return forwarded }
        var response = Crm_V1_OpenSessionResponse()
        response.header = outcome.header
        guard case .sessionOpened(let id)? = outcome.outcome else { throw RPCError(code: .internalError, message: "the session was not opened") }
        response.sessionID = id
        return response
    }

    func closeSession(request: Crm_V1_CloseSessionRequest, context: ServerContext) async throws -> Crm_V1_CloseSessionResponse {
        _ = try authorization.requireClient(context)
        let outcome = try await propose(.closeSession(session: request.sessionID, proposedAtMillis: Self.nowMillis())) { leader in
            try await leader.closeSession(request).header
        }
        if case .unknownSession? = outcome.outcome {
            throw RPCError(code: .notFound, message: "session \(request.sessionID) does not exist (closed or expired)")
        }
        var response = Crm_V1_CloseSessionResponse()
        response.header = outcome.header
        return response
    }

    // MARK: Proposing and forwarding

    struct Outcome {
        var header: Crm_V1_ResponseHeader
        var outcome: KVOutcome?
    }

    private func submit(_ write: KVWrite, session: Crm_V1_WriteSession?,
                        forward: (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>) async throws -> Crm_V1_ResponseHeader) async throws -> Outcome {
        if let problem = write.problem { throw RPCError(code: .invalidArgument, message: problem) }
        if let session, session.sessionID != KVCommand.noSession, session.sequence == 0 {
            throw RPCError(code: .invalidArgument, message: "a session's writes are numbered from 1")
        }
        let command = KVCommand.write(session: session?.sessionID ?? KVCommand.noSession, sequence: session?.sequence ?? 0,
                                      proposedAtMillis: Self.nowMillis(), write)
        let result = try await propose(command, forward: forward)
        switch result.outcome {
        case .unknownSession?:
            throw RPCError(code: .failedPrecondition, message: "session \(session?.sessionID ?? 0) does not exist (closed or expired); open a new one")
        case .superseded(let last)?:
            throw RPCError(code: .failedPrecondition, message: "write \(session?.sequence ?? 0) is older than the session's last write \(last)")
        case .refused(let why)?:
            throw RPCError(code: .invalidArgument, message: why)
        default:
            return result
        }
    }

    /// Proposes on this member if it leads; otherwise forwards the call to the leader.
    private func propose(_ command: KVCommand,
                         forward: (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>) async throws -> Crm_V1_ResponseHeader) async throws -> Outcome {
        try await retryingElection {
            do {
                let result = try await engine.propose(command.encoded)
                return Outcome(header: header(), outcome: result.outcome)
            } catch EngineError.notLeader(let hint) where hint != 0 && hint != engine.id {
                return Outcome(header: try await forward(try forwarder.kv(hint)), outcome: nil)
            }
        }
    }

    /// Runs `body`, again and again while no leader is known (an election is under way), with a
    /// growing pause, until the request timeout; engine errors become gRPC statuses.
    private func retryingElection<T>(_ body: () async throws -> T) async throws -> T {
        let deadline = Date().addingTimeInterval(Double(requestTimeoutMilliseconds) / 1000)
        var delay: UInt64 = 10_000_000
        while true {
            do {
                return try await body()
            } catch EngineError.notLeader where Date() < deadline {
                try await Task.sleep(nanoseconds: delay)
                delay = min(delay * 2, 200_000_000)
            } catch let error as EngineError {
                throw Self.rpcError(error)
            }
        }
    }

    // MARK: Helpers

    private func header() -> Crm_V1_ResponseHeader {
        let status = engine.currentStatus
        var header = Crm_V1_ResponseHeader()
        header.memberID = status.id
        header.term = status.term
        header.appliedIndex = status.appliedIndex
        header.leaderID = status.leader
        return header
    }

    private func storage<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            logger.error("storage read failed", metadata: ["error": "\(error)"])
            throw RPCError(code: .dataLoss, message: "\(error)")
        }
    }

    static func check(key: Data) throws {
        guard !key.isEmpty, key.count <= KVLimits.maxKeyBytes else {
            throw RPCError(code: .invalidArgument, message: "keys are 1 to \(KVLimits.maxKeyBytes) bytes; this one has \(key.count)")
        }
    }

    static func nowMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    static func rpcError(_ error: EngineError) -> RPCError {
        switch error {
        case .notLeader: return RPCError(code: .unavailable, message: error.description)
        case .timedOut: return RPCError(code: .deadlineExceeded, message: error.description)
        case .outcomeUnknown: return RPCError(code: .aborted, message: error.description)
        case .busy: return RPCError(code: .resourceExhausted, message: error.description)
        case .invalid: return RPCError(code: .invalidArgument, message: error.description)
        case .storage: return RPCError(code: .internalError, message: error.description)
        case .stopped: return RPCError(code: .unavailable, message: error.description)
        }
    }
}
