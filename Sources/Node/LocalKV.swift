import CRMProto
import Engine
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KVStore
import Logging
import Raft
import Storage
import Transport

/// How a member treats a call it cannot answer itself.
enum Routing: Equatable, Sendable {
    /// A client's call: a follower forwards writes to the leader and waits out elections.
    case forwardToLeader
    /// A member's or front's call: answered at once, a write on a follower refused with the
    /// leader's id (the caller routes it), so that calls are never forwarded twice.
    case refuse
    /// A front's session write on a follower: forwarded to the leader in the log's own messages
    /// and answered when applied here, or failed after `attemptMilliseconds` (a proposal the
    /// leader could not append is lost; the front resends it in its session). Anything else is
    /// refused like `.refuse`.
    case forwardSessionWrites(attemptMilliseconds: Int)
}

/// Who a KV call is made for: the identity that owns the sessions it opens and writes in.
/// A member that passes a client's call on (a front, a follower forwarding to the leader)
/// names the client in `crm-on-behalf-of`; only members are believed when they do.
struct Caller: Sendable, Equatable {
    let identity: PeerIdentity
    var owner: String { identity.description }

    static let onBehalfOfKey = "crm-on-behalf-of"

    /// The metadata a member sends with a call it makes for this caller.
    var forwarding: Metadata { [Self.onBehalfOfKey: .string(owner)] }

    /// The caller of a call that arrived from `direct` with `metadata`.
    static func of(_ direct: PeerIdentity, metadata: Metadata) -> Caller {
        if case .member = direct, let named = metadata[stringValues: onBehalfOfKey].first(where: { _ in true }),
            let identity = PeerIdentity(uri: named)
        {
            return Caller(identity: identity)
        }
        return Caller(identity: direct)
    }
}

/// Trailing metadata on refusals: `crm-refused` marks a request that certainly did not take
/// effect (safe to send again anywhere), `crm-leader` names the leader this member knows.
enum RefusalMetadata {
    static let refused = "crm-refused"
    static let leader = "crm-leader"
    static let alarm = "crm-alarm"
    static let retryAfter = "retry-after-ms"

    static let notServing = "not-serving"

    static func isRefusal(_ error: RPCError) -> Bool {
        error.metadata[stringValues: refused].first(where: { _ in true }) != nil
    }
    /// The member serves no data at all (CORRUPT, or its storage failed): try another.
    static func isNotServing(_ error: RPCError) -> Bool { error.metadata[stringValues: refused].contains(notServing) }
    static func leaderHint(_ error: RPCError) -> NodeID? {
        error.metadata[stringValues: leader].first(where: { _ in true }).flatMap { NodeID($0) }
    }
    static func alarm(_ error: RPCError) -> String? { error.metadata[stringValues: alarm].first(where: { _ in true }) }
}

extension RPCError {
    /// An error received from another member as this member passes it on: its code, its
    /// message, and only our own metadata (`crm-*`, `retry-after-ms`). The rest came with the
    /// other member's HTTP/2 response (`:status`, `content-type`, `grpc-status`, ...); written
    /// back into this call's trailers it made a header block that clients refuse, closing the
    /// whole connection and every call on it.
    func relayed() -> RPCError {
        var kept = Metadata()
        for (key, value) in metadata where key.hasPrefix("crm-") || key == RefusalMetadata.retryAfter {
            if case .string(let text) = value { kept.addString(text, forKey: key) }
        }
        return RPCError(code: code, message: message, metadata: kept)
    }
}

/// What a member may serve now, from its alarms and its storage.
struct ServingGate: Sendable {
    /// Every data call is refused with this (CORRUPT, or the storage failed).
    var refusal: RPCError?
    /// Writes that add data are refused with this (NOSPACE).
    var writeRefusal: RPCError?

    static let open = ServingGate()

    static func from(_ snapshot: HealthSnapshot, _ status: EngineStatus) -> ServingGate {
        var gate = ServingGate()
        if let alarm = snapshot.alarm(.corrupt) ?? snapshot.alarm(.tamper) {
            var metadata = Metadata()
            metadata.addString(alarm.kind.rawValue, forKey: RefusalMetadata.alarm)
            metadata.addString(RefusalMetadata.notServing, forKey: RefusalMetadata.refused)
            gate.refusal = RPCError(
                code: .dataLoss,
                message:
                    "member \(status.id) serves no data: \(alarm.kind.rawValue) alarm (\(alarm.reason)); use another member",
                metadata: metadata)
        } else if let failure = status.failure {
            var metadata = Metadata()
            metadata.addString(RefusalMetadata.notServing, forKey: RefusalMetadata.refused)
            gate.refusal = RPCError(
                code: .unavailable,
                message: "member \(status.id) serves no data: its storage failed (\(failure)); use another member",
                metadata: metadata)
        }
        if let noSpace = snapshot.alarm(.noSpace) {
            var metadata = Metadata()
            metadata.addString("NOSPACE", forKey: RefusalMetadata.alarm)
            gate.writeRefusal = RPCError(
                code: .resourceExhausted,
                message:
                    "NOSPACE on member \(status.id): \(noSpace.reason); writes that add data are refused, reads and deletes still work",
                metadata: metadata)
        }
        return gate
    }
}

/// The KV operations on this member's own engine, shared by the client API and the front's
/// in-process path: writes proposed on the leader (or forwarded, or refused, by `Routing`),
/// linearizable reads after a ReadIndex, serializable reads from the local state.
struct LocalKV: Sendable {
    let engine: RaftEngine
    let members: MemberClients
    let gate: @Sendable () -> ServingGate
    let requestTimeoutMilliseconds: Int
    let logger: Logger
    let clock = ProposalClock()

    // MARK: Reads

    func get(_ request: Crm_V1_GetRequest, routing: Routing) async throws -> Crm_V1_GetResponse {
        try checkServing()
        try Self.check(key: request.key)
        try await waitForRead(request.consistency, routing: routing)
        let value = try storage { try engine.kv.get(Array(request.key)) }
        var response = Crm_V1_GetResponse()
        response.header = header()
        response.found = value != nil
        response.value = Data(value ?? [])
        return response
    }

    func range(_ request: Crm_V1_RangeRequest, routing: Routing) async throws -> Crm_V1_RangeResponse {
        try checkServing()
        let limit = request.limit == 0 ? 1000 : Int(request.limit)
        guard (1...KVLimits.maxRangeLimit).contains(limit) else {
            throw RPCError(code: .invalidArgument, message: "limit must be 1 to \(KVLimits.maxRangeLimit)")
        }
        // Bounds are keys: the same limit (an empty `from` is the start, an empty `to` the end).
        for (name, bound) in [("from", request.from), ("to", request.to)] where bound.count > KVLimits.maxKeyBytes {
            throw RPCError(
                code: .invalidArgument,
                message:
                    "range `\(name)` is a key of at most \(KVLimits.maxKeyBytes) bytes; this one has \(bound.count)")
        }
        try await waitForRead(request.consistency, routing: routing)
        let page = try storage {
            try engine.kv.range(
                from: Array(request.from), to: request.to.isEmpty ? nil : Array(request.to), limit: limit)
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

    private func waitForRead(_ consistency: Crm_V1_ReadConsistency, routing: Routing) async throws {
        switch consistency {
        case .serializable: return
        case .linearizable:
            #if CRM_FAULT_HOOKS
            if FaultHooks.shared.plantedBug == .staleReads { return }
            #endif
            try await retryingElection(routing) { try await engine.waitForLinearizableRead() }
        case .UNRECOGNIZED(let value):
            throw RPCError(code: .invalidArgument, message: "unknown read consistency \(value)")
        }
    }

    // MARK: Writes

    func put(_ request: Crm_V1_PutRequest, caller: Caller, routing: Routing) async throws -> Crm_V1_PutResponse {
        try checkServing(addsData: true)
        let write = KVWrite.put(key: Array(request.key), value: Array(request.value))
        let outcome = try await submit(
            write, session: request.hasSession ? request.session : nil, caller: caller, routing: routing
        ) { leader in
            try await leader.put(request, metadata: caller.forwarding).header
        }
        var response = Crm_V1_PutResponse()
        response.header = outcome.header
        return response
    }

    func delete(_ request: Crm_V1_DeleteRequest, caller: Caller, routing: Routing) async throws -> Crm_V1_DeleteResponse
    {
        try checkServing()
        var forwarded: Crm_V1_DeleteResponse?
        let outcome = try await submit(
            .delete(key: Array(request.key)), session: request.hasSession ? request.session : nil, caller: caller,
            routing: routing
        ) { leader in
            let response = try await leader.delete(request, metadata: caller.forwarding)
            forwarded = response
            return response.header
        }
        if let forwarded { return forwarded }
        var response = Crm_V1_DeleteResponse()
        response.header = outcome.header
        if case .deleted(let existed)? = outcome.outcome { response.existed = existed }
        return response
    }

    func compareAndSwap(
        _ request: Crm_V1_CompareAndSwapRequest, caller: Caller, routing: Routing
    ) async throws -> Crm_V1_CompareAndSwapResponse {
        // Fields that contradict each other are refused rather than one of them silently ignored.
        if request.expectAbsent && !request.expectedValue.isEmpty {
            throw RPCError(
                code: .invalidArgument, message: "expect_absent is set and so is expected_value; give one of them")
        }
        if request.deleteIfMatch && !request.newValue.isEmpty {
            throw RPCError(
                code: .invalidArgument, message: "delete_if_match is set and so is new_value; give one of them")
        }
        try checkServing(addsData: !request.deleteIfMatch)
        let write = KVWrite.compareAndSwap(
            key: Array(request.key), expected: request.expectAbsent ? nil : Array(request.expectedValue),
            new: request.deleteIfMatch ? nil : Array(request.newValue))
        var forwarded: Crm_V1_CompareAndSwapResponse?
        let outcome = try await submit(
            write, session: request.hasSession ? request.session : nil, caller: caller, routing: routing
        ) { leader in
            let response = try await leader.compareAndSwap(request, metadata: caller.forwarding)
            forwarded = response
            return response.header
        }
        if let forwarded { return forwarded }
        var response = Crm_V1_CompareAndSwapResponse()
        response.header = outcome.header
        if case .compareAndSwap(let swapped)? = outcome.outcome { response.swapped = swapped }
        return response
    }

    func openSession(
        _ request: Crm_V1_OpenSessionRequest, caller: Caller, routing: Routing
    ) async throws -> Crm_V1_OpenSessionResponse {
        try checkServing()
        var forwarded: Crm_V1_OpenSessionResponse?
        var outcome = Outcome(header: header(), outcome: nil)
        // An id already taken (one chance in 2^53 per session) is refused; draw again.
        for _ in 0..<3 {
            let open = KVCommand.openSession(
                id: KVCommand.randomSessionID(), owner: caller.owner, proposedAtMillis: nowMillis())
            outcome = try await propose(open, routing: routing) { leader in
                let response = try await leader.openSession(request, metadata: caller.forwarding)
                forwarded = response
                return response.header
            }
            if let forwarded { return forwarded }
            if case .refused? = outcome.outcome { continue }
            break
        }
        var response = Crm_V1_OpenSessionResponse()
        response.header = outcome.header
        guard case .sessionOpened(let id)? = outcome.outcome else {
            throw RPCError(code: .internalError, message: "the session was not opened")
        }
        response.sessionID = id
        return response
    }

    func closeSession(
        _ request: Crm_V1_CloseSessionRequest, caller: Caller, routing: Routing
    ) async throws -> Crm_V1_CloseSessionResponse {
        try checkServing()
        let close = KVCommand.closeSession(
            session: request.sessionID, owner: caller.owner, proposedAtMillis: nowMillis())
        let outcome = try await propose(close, routing: routing) { leader in
            try await leader.closeSession(request, metadata: caller.forwarding).header
        }
        switch outcome.outcome {
        case .unknownSession?:
            throw RPCError(code: .notFound, message: "session \(request.sessionID) does not exist (closed or expired)")
        case .notSessionOwner?:
            throw Self.notOwner(request.sessionID, caller)
        default:
            break
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

    private func submit(
        _ write: KVWrite, session: Crm_V1_WriteSession?, caller: Caller, routing: Routing,
        forward: (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>) async throws -> Crm_V1_ResponseHeader
    ) async throws -> Outcome {
        if let problem = write.problem { throw RPCError(code: .invalidArgument, message: problem) }
        if let session, session.sessionID != KVCommand.noSession, session.sequence == 0 {
            throw RPCError(code: .invalidArgument, message: "a session's writes are numbered from 1")
        }
        let command = KVCommand.write(
            session: session?.sessionID ?? KVCommand.noSession, sequence: session?.sequence ?? 0,
            owner: caller.owner, proposedAtMillis: nowMillis(), write)
        let result = try await propose(command, routing: routing, forward: forward)
        switch result.outcome {
        case .unknownSession?:
            throw RPCError(
                code: .failedPrecondition,
                message: "session \(session?.sessionID ?? 0) does not exist (closed or expired); open a new one",
                metadata: ["crm-unknown-session": "\(session?.sessionID ?? 0)"])
        case .superseded(let last)?:
            throw RPCError(
                code: .failedPrecondition,
                message: "write \(session?.sequence ?? 0) is older than the session's last write \(last)")
        case .refused(let why)?:
            throw RPCError(code: .invalidArgument, message: why)
        case .notSessionOwner?:
            throw Self.notOwner(session?.sessionID ?? 0, caller)
        default:
            return result
        }
    }

    /// Proposes on this member if it leads; otherwise forwards the call to the leader (a
    /// client's call) or refuses it naming the leader (a member's call).
    private func propose(
        _ command: KVCommand, routing: Routing,
        forward: (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>) async throws -> Crm_V1_ResponseHeader
    ) async throws -> Outcome {
        #if CRM_FAULT_HOOKS
        if let acknowledged = acknowledgeBeforeCommit(command) { return acknowledged }
        #endif
        return try await retryingElection(routing) {
            do {
                let result: ProposalResult
                if case .forwardSessionWrites(let attempt) = routing, let forwardable = command.sessionWrite {
                    result = try await engine.propose(
                        command.encoded, forwardable: forwardable, timeoutMilliseconds: attempt)
                } else {
                    result = try await engine.propose(command.encoded)
                }
                return Outcome(header: header(), outcome: result.outcome)
            } catch EngineError.notLeader(let hint) where routing == .forwardToLeader && hint != 0 && hint != engine.id
            {
                do {
                    return Outcome(header: try await forward(try members.kv(hint)), outcome: nil)
                } catch let error as RPCError where MemberClients.wasNotSent(error) {
                    // The connection to the leader is being re-established: the call never left,
                    // so it is tried again (the leader may have changed meanwhile).
                    throw EngineError.notLeader(leaderHint: 0)
                } catch let error as RPCError {
                    throw error.relayed()
                }
            }
        }
    }

    #if CRM_FAULT_HOOKS
    /// The drill bug `ack_before_commit`: a leader acknowledges a put at once and proposes it
    /// 200 ms later (debug builds only).
    private func acknowledgeBeforeCommit(_ command: KVCommand) -> Outcome? {
        guard FaultHooks.shared.plantedBug == .ackBeforeCommit, case .write(_, _, _, _, .put) = command,
            engine.currentStatus.role == .leader
        else { return nil }
        let engine = self.engine
        let encoded = command.encoded
        Task {
            try? await Task.sleep(nanoseconds: 200_000_000) // write-behind: proposed a little later
            _ = try? await engine.propose(encoded)
        }
        return Outcome(header: header(), outcome: nil)
    }
    #endif

    /// Runs `body`; for a client's call, again and again while no leader is known (an election
    /// is under way), with a growing pause, until the request timeout. Engine errors become
    /// gRPC statuses.
    private func retryingElection<T>(_ routing: Routing, _ body: () async throws -> T) async throws -> T {
        let deadline = Date().addingTimeInterval(Double(requestTimeoutMilliseconds) / 1000)
        var delay: UInt64 = 10_000_000
        while true {
            do {
                return try await body()
            } catch EngineError.notLeader where routing == .forwardToLeader && Date() < deadline {
                try await Task.sleep(nanoseconds: delay)
                delay = min(delay * 2, 200_000_000)
            } catch let error as EngineError {
                throw Self.rpcError(error)
            }
        }
    }

    // MARK: Helpers

    static func notOwner(_ session: UInt64, _ caller: Caller) -> RPCError {
        RPCError(
            code: .permissionDenied,
            message: "session \(session) belongs to another client, not \(caller.owner); open a session of your own")
    }

    private func checkServing(addsData: Bool = false) throws {
        let gate = gate()
        if let refusal = gate.refusal { throw refusal }
        if addsData, let refusal = gate.writeRefusal { throw refusal }
    }

    func header() -> Crm_V1_ResponseHeader {
        let status = engine.currentStatus
        var header = Crm_V1_ResponseHeader()
        header.memberID = status.id
        header.term = status.term
        header.appliedIndex = status.appliedIndex
        header.leaderID = status.leader
        return header
    }

    /// A read of this member's store. A bad argument is the caller's (INVALID_ARGUMENT); any
    /// other failure is this member's (DATA_LOSS, which moves fronts to other members).
    private func storage<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch StorageError.invalidArgument(let why) {
            throw RPCError(code: .invalidArgument, message: why)
        } catch {
            logger.error("storage read failed", metadata: ["error": "\(error)"])
            throw RPCError(code: .dataLoss, message: "\(error)")
        }
    }

    static func check(key: Data) throws {
        guard !key.isEmpty, key.count <= KVLimits.maxKeyBytes else {
            throw RPCError(
                code: .invalidArgument,
                message: "keys are 1 to \(KVLimits.maxKeyBytes) bytes; this one has \(key.count)")
        }
    }

    /// The stamp for a proposal made now (see `ProposalClock`).
    func nowMillis() -> UInt64 {
        let status = engine.currentStatus
        return clock.stamp(term: status.term, logClockMillis: status.logClockMillis)
    }

    /// Engine errors as gRPC statuses; those raised before anything was proposed carry
    /// `crm-refused` (and the leader's id when known).
    static func rpcError(_ error: EngineError) -> RPCError {
        var refused = Metadata()
        refused.addString("1", forKey: RefusalMetadata.refused)
        switch error {
        case .notLeader(let hint):
            if hint != 0 { refused.addString("\(hint)", forKey: RefusalMetadata.leader) }
            return RPCError(code: .unavailable, message: error.description, metadata: refused)
        case .timedOut: return RPCError(code: .deadlineExceeded, message: error.description)
        case .outcomeUnknown: return RPCError(code: .aborted, message: error.description)
        case .busy: return RPCError(code: .resourceExhausted, message: error.description, metadata: refused)
        case .invalid: return RPCError(code: .invalidArgument, message: error.description)
        case .storage: return RPCError(code: .internalError, message: error.description)
        case .stopped: return RPCError(code: .unavailable, message: error.description)
        }
    }
}
