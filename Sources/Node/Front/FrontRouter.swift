import CRMProto
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Raft
import Synchronization

/// One KV call as the front makes it: in process on this node's own member, or over gRPC to
/// another member's client API (where, being a member's call, it is never forwarded).
struct FrontCall<Response: Sendable>: Sendable {
    enum Kind: Sendable {
        case write, linearizableRead, serializableRead
    }

    let kind: Kind
    /// Safe to send again after an unknown outcome: reads, and writes tagged with a session.
    let retryable: Bool
    /// The call on this node's own member, routed as the front says: `.refuse` when that
    /// member is the target, `.forwardSessionWrites` when it follows the target.
    let local: @Sendable (LocalKV, Routing) async throws -> Response
    let remote: @Sendable (Crm_V1_KV.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> Response
    let header: @Sendable (Response) -> Crm_V1_ResponseHeader
}

/// Sends each call to the right member and retries it across leader changes and member
/// failures: bounded exponential back-off with jitter, within one total deadline. A call is sent
/// again only when that cannot apply it twice: the member refused it (`crm-refused`), or it is a
/// read, or a write in a session.
final class FrontRouter: Sendable {
    struct Options: Sendable {
        var requestTimeoutMilliseconds = 5000
        /// One attempt at most this long before the front tries elsewhere.
        var attemptTimeoutMilliseconds = 1500
        var firstBackoffMilliseconds = 5
        var maxBackoffMilliseconds = 200
    }

    let selfID: NodeID
    let options: Options
    private let local: LocalKV
    private let members: MemberClients
    private let table: SharedRoutingTable
    private let metrics: FrontMetrics
    private let logger: Logger

    init(
        selfID: NodeID, options: Options, local: LocalKV, members: MemberClients, table: SharedRoutingTable,
        metrics: FrontMetrics, logger: Logger
    ) {
        self.selfID = selfID
        self.options = options
        self.local = local
        self.members = members
        self.table = table
        self.metrics = metrics
        self.logger = logger
    }

    /// When a request arriving now must be answered: `front.request_timeout_ms` from now.
    func deadlineFromNow() -> UInt64 {
        DispatchTime.now().uptimeNanoseconds + UInt64(options.requestTimeoutMilliseconds) * 1_000_000
    }

    /// Runs `call` until it succeeds, fails for good, or the deadline passes (then the last
    /// error is returned, so the client sees why). `deadline`: the client request's, when this
    /// call is one step of it (a front session opened for a write shares the write's).
    func run<Response>(_ call: FrontCall<Response>, operation: String, deadline: UInt64? = nil) async throws -> Response
    {
        let deadline = deadline ?? deadlineFromNow()
        var backoff = UInt64(options.firstBackoffMilliseconds) * 1_000_000
        var lastError: RPCError?
        var attempts = 0
        var redirects = 0
        // Set once an attempt ended without saying whether it applied (abandoned, timed out, the
        // connection lost): from then on no error may tell the client "not applied".
        var outcomeUnknown = false
        func unlessUnknown(_ error: RPCError) -> RPCError { outcomeUnknown ? Self.indeterminate(error) : error }
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadline, let lastError {
                metrics.finished(operation, outcome: "deadline", attempts: attempts)
                throw unlessUnknown(lastError)
            }
            guard let target = choose(call.kind, now: now) else {
                lastError = lastError ?? RPCError(code: .unavailable, message: "no member is reachable from this front")
                try await pause(&backoff, until: deadline)
                continue
            }
            attempts += 1
            do {
                let response = try await attempt(call, on: target, remaining: deadline - min(deadline, now))
                metrics.finished(operation, outcome: "ok", attempts: attempts)
                return response
            } catch let error as RPCError {
                let verdict = classify(error, call: call, target: target)
                if verdict != .final && !RefusalMetadata.isRefusal(error) { outcomeUnknown = true }
                switch verdict {
                case .final:
                    metrics.finished(operation, outcome: "error", attempts: attempts)
                    throw unlessUnknown(error)
                case .tryLeaderNow:
                    lastError = error
                    // Members disagreeing about the leader (an election under way) must not spin the front.
                    redirects += 1
                    if redirects % 3 == 0 { try await pause(&backoff, until: deadline) }
                case .retryAfterPause:
                    lastError = error
                    try await pause(&backoff, until: deadline)
                }
            }
            if DispatchTime.now().uptimeNanoseconds >= deadline {
                metrics.finished(operation, outcome: "deadline", attempts: attempts)
                throw unlessUnknown(
                    lastError ?? RPCError(code: .deadlineExceeded, message: "the front's request deadline passed"))
            }
        }
    }

    /// `error` as the answer to a call one of whose earlier attempts may have applied: a refusal
    /// of a later attempt proves nothing about that one, so the refusal marks go and the status
    /// says the outcome is unknown (a write in a session is safe to send again).
    static func indeterminate(_ error: RPCError) -> RPCError {
        guard RefusalMetadata.isRefusal(error) else { return error }
        return RPCError(
            code: .unavailable,
            message: "outcome unknown: an earlier attempt may have applied; the last one was refused (\(error.message))"
        )
    }

    /// This node's own member knows of a new leader the moment it is elected: the quickest
    /// news a front can have (unless that member is down).
    private func learnFromLocalMember() {
        let status = local.engine.currentStatus
        guard status.failure == nil, status.leader != 0 else { return }
        table.withLock { $0.learnLeader(status.leader, term: status.term) }
    }

    /// Whether this node's own member is serving and follows `leader`.
    private func ownMemberFollows(_ leader: NodeID) -> Bool {
        let status = local.engine.currentStatus
        return status.failure == nil && status.role != .leader && status.leader == leader
    }

    private func choose(_ kind: FrontCall<some Sendable>.Kind, now: UInt64) -> NodeID? {
        learnFromLocalMember()
        return table.withLock { table in
            table.readmitExpired(now: now)
            var random = SystemRandomNumberGenerator()
            switch kind {
            case .write: return table.writeTarget(now: now, random: &random)
            case .linearizableRead, .serializableRead:
                // Served by this node's own member when it can (in process: a read sent to
                // another member costs a gRPC call and its TLS on both sides, more than the read
                // itself; clients spread over the fronts); otherwise by the least loaded of two.
                if table.readable(selfID, now: now) { return selfID }
                return table.pickForRead(now: now, random: &random)
            }
        }
    }

    private func attempt<Response>(
        _ call: FrontCall<Response>, on target: NodeID, remaining: UInt64
    ) async throws -> Response {
        table.withLock { $0.callStarted(target) }
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            let response: Response
            if target == selfID {
                response = try await call.local(local, .refuse)
            } else if call.kind == .write && call.retryable && ownMemberFollows(target) {
                // A session write for the leader this node's member follows: forwarded in the
                // log's own messages (one hop on the peer connection, no gRPC call).
                let budget = min(remaining / 1_000_000, UInt64(options.attemptTimeoutMilliseconds))
                response = try await call.local(local, .forwardSessionWrites(attemptMilliseconds: Int(max(budget, 1))))
            } else {
                var callOptions = CallOptions.defaults
                let budget = min(remaining, UInt64(self.options.attemptTimeoutMilliseconds) * 1_000_000)
                callOptions.timeout = .nanoseconds(Int64(max(budget, 1_000_000)))
                let options = callOptions
                let client = try members.kv(target)
                if call.retryable {
                    response = try await abandoningIfOvertaken(call.kind, target: target) {
                        try await call.remote(client, options)
                    }
                } else {
                    response = try await call.remote(client, options)
                }
            }
            let header = call.header(response)
            let now = DispatchTime.now().uptimeNanoseconds
            table.withLock { table in
                table.callFinished(
                    target, latencyMicroseconds: Double(now - started) / 1000, memberFault: false, now: now)
                table.learnLeader(header.leaderID, term: header.term)
            }
            return response
        } catch {
            var rpc =
                (error as? RPCError)?.relayed() ?? RPCError(code: .unavailable, message: "member \(target): \(error)")
            let notSent = target != selfID && (error as? RPCError).map(MemberClients.wasNotSent) == true
            if notSent {
                // The call never left this front (no connection to the member): certainly not
                // applied, so a refusal, said in the front's words rather than the library's.
                var refused = Metadata()
                refused.addString("1", forKey: RefusalMetadata.refused)
                rpc = RPCError(
                    code: .unavailable, message: "member \(target) cannot be reached from this front", metadata: refused
                )
            }
            let now = DispatchTime.now().uptimeNanoseconds
            let fault = notSent || Self.isMemberFault(rpc)
            table.withLock {
                $0.callFinished(target, latencyMicroseconds: Double(now - started) / 1000, memberFault: fault, now: now)
            }
            throw rpc
        }
    }

    /// Runs a call to a remote member, abandoning it (to be sent again elsewhere) once it is
    /// clearly going to the wrong place: a write whose target is no longer the leader (a paused
    /// leader answers nothing until the attempt would time out), a read whose target was ejected.
    private func abandoningIfOvertaken<Response: Sendable>(
        _ kind: FrontCall<Response>.Kind, target: NodeID,
        _ body: @escaping @Sendable () async throws -> Response
    ) async throws -> Response {
        try await withThrowingTaskGroup(of: Response?.self) { group in
            group.addTask { try await body() }
            group.addTask { [self] in
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(20))
                    learnFromLocalMember()
                    let now = DispatchTime.now().uptimeNanoseconds
                    let overtaken = table.withLock { table in
                        kind == .write
                            ? (table.leader != 0 && table.leader != target) : !table.readable(target, now: now)
                    }
                    if overtaken { return nil }
                }
                return nil
            }
            defer { group.cancelAll() }
            while let first = try await group.next() {
                if let response = first { return response }
                var metadata = Metadata()
                metadata.addString("1", forKey: Self.overtaken)
                throw RPCError(
                    code: .unavailable,
                    message: "member \(target) was overtaken (a new leader, or ejected) while the call was under way",
                    metadata: metadata)
            }
            throw RPCError(code: .unavailable, message: "member \(target): the call ended without an answer")
        }
    }

    /// Marks an attempt the front abandoned itself (only ever for calls safe to send again).
    static let overtaken = "crm-front-overtaken"

    static func wasOvertaken(_ error: RPCError) -> Bool {
        error.metadata[stringValues: overtaken].contains { _ in true }
    }

    enum Verdict { case final, tryLeaderNow, retryAfterPause }

    /// What to do after `error` from `target`.
    private func classify(_ error: RPCError, call: FrontCall<some Sendable>, target: NodeID) -> Verdict {
        let refused = RefusalMetadata.isRefusal(error)
        if Self.wasOvertaken(error) { return .tryLeaderNow }
        if let hint = RefusalMetadata.leaderHint(error), hint != target {
            // A follower named the leader: go there at once.
            table.withLock { table in
                table.forgetLeader(target)
                table.learnLeader(hint, term: 0)
            }
            return .tryLeaderNow
        }
        switch error.code {
        case .invalidArgument, .notFound, .alreadyExists, .permissionDenied, .unauthenticated, .outOfRange,
            .unimplemented, .cancelled:
            return .final
        case .failedPrecondition:
            return .final
        case .resourceExhausted:
            // NOSPACE is the cluster's answer, not this member's fault; "busy" is worth a retry.
            return refused && RefusalMetadata.alarm(error) == nil ? .retryAfterPause : .final
        case .unavailable, .dataLoss, .internalError, .unknown:
            if error.code == .unavailable, call.kind == .write { table.withLock { $0.forgetLeader(target) } }
            return refused || call.retryable ? .retryAfterPause : .final
        case .deadlineExceeded, .aborted:
            return call.retryable ? .retryAfterPause : .final
        default:
            return call.retryable ? .retryAfterPause : .final
        }
    }

    /// Failures that say the member cannot serve (rather than that the request was bad).
    static func isMemberFault(_ error: RPCError) -> Bool {
        switch error.code {
        case .unavailable:
            if wasOvertaken(error) { return false }
            return !RefusalMetadata.isRefusal(error) || RefusalMetadata.isNotServing(error)
        case .dataLoss, .internalError, .unknown, .deadlineExceeded: return true
        default: return false
        }
    }

    /// Sleeps for the back-off with ±50% jitter, then doubles it up to the cap; never past the deadline.
    private func pause(_ backoff: inout UInt64, until deadline: UInt64) async throws {
        let now = DispatchTime.now().uptimeNanoseconds
        guard now < deadline else { return }
        let jittered = UInt64(Double(backoff) * Double.random(in: 0.5...1.5))
        try await Task.sleep(nanoseconds: min(jittered, deadline - now))
        backoff = min(backoff * 2, UInt64(options.maxBackoffMilliseconds) * 1_000_000)
    }
}
