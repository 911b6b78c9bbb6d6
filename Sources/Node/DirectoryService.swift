import CRM
import CRMProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Identity
import KVStore
import Transport

/// Sign-in and sessions (`crm.v1.Directory`) on a member's client listener and its front.
/// Every call is served by the leader (a follower passes it on with the caller, the token and
/// the asserted address): sign-in and sign-out write, and a session's `lastSeen` is moved on
/// there, so that a session used only through followers does not go idle.
struct DirectoryService: Crm_V1_Directory.ServiceProtocol {
    let identity: CRMIdentity
    let members: MemberClients
    let authorization: Authorization
    let limiter: RateLimiter
    /// Where the entries of reads go (batched into the trail).
    let audit: AuditRecorder
    /// Where the time records calls spend on authorization is recorded (nil: nowhere).
    var metrics: NodeMetrics? = nil

    var crm: CRMRecords { identity.crm }

    static let addressKey = "crm-client-address"

    func admit(_ metadata: Metadata, _ context: ServerContext) throws -> RecordsService.Call {
        try RecordsService.admit(metadata, context, authorization, limiter)
    }

    /// Runs the call on the leader: here when this member leads, else passed to the leader with
    /// the caller, its bearer token and asserted address.
    func onLeader<Response>(
        _ access: RecordsService.Call, _ metadata: Metadata,
        forward: (Crm_V1_Directory.Client<HTTP2ClientTransport.Posix>, Metadata) async throws -> Response,
        lead: (Caller) async throws -> Response
    ) async throws -> Response {
        try crm.checkServing()
        if crm.isLeader {
            return try await CRMIdentity.mapped { try await crm.mapped { try await lead(access.caller) } }
        }
        let leader = crm.leaderHint
        guard access.routing == .forwardToLeader, leader != 0 else {
            throw LocalKV.rpcError(.notLeader(leaderHint: leader))
        }
        var passed = access.caller.forwarding
        passed.add(contentsOf: Self.sessionHeaders(metadata))
        do {
            return try await forward(try members.directory(leader), passed)
        } catch let error as RPCError {
            throw error.relayed()
        }
    }

    /// The application's ceiling (its principal's roles): an application needs a principal
    /// record that is neither blocked nor expired, except an operator's tool (a client on the
    /// admin list) without one, which has no ceiling. Read after the read barrier.
    func ceiling(_ caller: Caller) throws -> [HeldRole]? {
        guard case .client(let name) = caller.identity else { throw PrincipalRefusal.unknown }
        let principals = PrincipalChanges(records: crm.changes)
        if authorization.admins.contains(name), try principals.read(name) == nil { return nil }
        do {
            let (principal, _) = try principals.check(name, now: sessionNow())
            return try identity.roles(principal.ceiling)
        } catch let refusal as PrincipalRefusal {
            throw RPCError(code: .permissionDenied, message: refusal.description)
        }
    }

    /// The time sessions are checked and stamped with: the proposal clock (shifted in debug
    /// builds by an injected fault, to test timeouts without waiting).
    func sessionNow() -> UInt64 {
        let now = Int64(clamping: crm.local.nowMillis()) &+ FaultHooks.shared.sessionClockOffsetMilliseconds
        return UInt64(max(0, now))
    }

    /// Records the application's use (at most hourly) on the leader.
    func touchPrincipal(_ caller: Caller) async throws {
        guard case .client(let name) = caller.identity else { return }
        let principals = PrincipalChanges(records: crm.changes)
        guard let found = try principals.read(name), let touch = try principals.touch(found, now: sessionNow())
        else { return }
        _ = try await crm.propose(touch, caller: caller, audit: nil) // a concurrent touch may win; either will do
    }

    /// The session the call carries, checked on the leader's state, its `lastSeen` moved on
    /// when due.
    func session(_ metadata: Metadata, _ caller: Caller) async throws -> CheckedSession {
        try await authenticated(metadata, caller).checked
    }

    /// The session, and the application's ceiling read on the way (its principal checked once),
    /// after a read barrier unless the caller has just passed one. On the leader a due touch of
    /// the session (or of the principal's last use) is proposed here; a follower asks the leader
    /// to make it, without waiting, so that a session used only through followers stays alive.
    func authenticated(
        _ metadata: Metadata, _ caller: Caller, barrier: Bool = true
    ) async throws
        -> (checked: CheckedSession, ceiling: [HeldRole]?)
    {
        let token = try CRMIdentity.bearer(metadata)
        if barrier { try await crm.waitForRead(serializable: false) }
        let ceiling = try ceiling(caller)
        let sessions = identity.sessions
        let now = sessionNow()
        let checked = try sessions.check(
            token: token, application: caller.owner, address: try asserted(metadata, caller), now: now)
        let touch = sessions.touch(checked, now: now)
        if crm.isLeader {
            try await touchPrincipal(caller)
            if let touch { _ = try await crm.propose(touch, caller: caller, audit: nil) } // a concurrent touch may win
        } else if touch != nil || principalTouchDue(caller, now: now) {
            askLeaderToTouch(metadata, caller)
        }
        return (checked, ceiling)
    }

    private func principalTouchDue(_ caller: Caller, now: UInt64) -> Bool {
        let principals = PrincipalChanges(records: crm.changes)
        guard case .client(let name) = caller.identity, let found = try? principals.read(name) else { return false }
        return (try? principals.touch(found, now: now)) != nil
    }

    /// The session headers of a call (its bearer token and the asserted end-user address), to
    /// check where it is served and to pass on with it.
    static func sessionHeaders(_ metadata: Metadata) -> Metadata {
        var kept = Metadata()
        for key in ["authorization", addressKey] {
            for value in metadata[stringValues: key] { kept.addString(value, forKey: key) }
        }
        return kept
    }

    /// A `WhoAmI` on the leader for this session, in the background: it touches the session and
    /// the principal there. Its failure changes nothing here (the next call asks again).
    private func askLeaderToTouch(_ metadata: Metadata, _ caller: Caller) {
        let leader = crm.leaderHint
        guard leader != 0, let client = try? members.directory(leader) else { return }
        var passed = caller.forwarding
        passed.add(contentsOf: Self.sessionHeaders(metadata))
        let sent = passed
        Task {
            var options = CallOptions.defaults
            options.timeout = .seconds(5)
            _ = try? await client.whoAmI(Crm_V1_WhoAmIRequest(), metadata: sent, options: options)
        }
    }

    /// The end user's address the application asserts, if its principal may assert one.
    func asserted(_ metadata: Metadata, _ caller: Caller) throws -> String? {
        guard let address = metadata[stringValues: Self.addressKey].first(where: { _ in true }),
            case .client(let name) = caller.identity,
            let principal = try PrincipalChanges(records: crm.changes).read(name)?.principal,
            principal.mayAssertAddress, IPRange.isAddress(address)
        else { return nil }
        return address
    }

    // MARK: gRPC

    func login(
        request: ServerRequest<Crm_V1_LoginRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_LoginResponse> {
        ServerResponse(
            message: try await login(request.message, try admit(request.metadata, context), request.metadata))
    }

    func login(
        _ message: Crm_V1_LoginRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws
        -> Crm_V1_LoginResponse
    {
        return try await onLeader(access, metadata) { leader, metadata in
            try await leader.login(message, metadata: metadata)
        } lead: { caller in
            try await crm.waitForRead(serializable: false)
            _ = try ceiling(caller)
            try await touchPrincipal(caller)
            var metadata = metadata
            if !message.clientAddress.isEmpty {
                metadata.replaceOrAddString(message.clientAddress, forKey: Self.addressKey)
            }
            let address = try asserted(metadata, caller)
            let opened: SignIn.Opened
            let throttles = try identity.throttles()
            let source = AttemptSource.of(address: address, application: caller.owner)
            let (context, deviceToken) = try signInContext(message, address: address, source: source)
            let histories = identity.histories
            let now = sessionNow()
            do {
                opened = try await identity.signIn().attempt(
                    username: message.username, password: message.password, application: caller.owner,
                    address: address, bindAddress: message.bindToAddress && address != nil, now: now,
                    throttles: throttles, source: source, device: context.device,
                    knownDevice: { try histories.read($0).history.knows(device: context.device) })
            } catch let refused as SignInRefused {
                countFailedSignIn(caller)
                await recordFailedSignIn(refused, username: message.username, context, throttles, caller)
                throw refused
            } catch let throttled as SignInThrottled {
                metrics?.throttledSignIns.increment()
                countFailedSignIn(caller)
                let audit = AuditEntry(
                    action: "login.throttled",
                    actor: throttled.user.map(DirectoryChanges.owner(of:)) ?? "crm://user/unknown",
                    application: caller.owner, records: throttled.user.map { [$0] } ?? [], outcome: .denied,
                    reason: throttled.retryAfterMillis.map { "back-off: \($0) ms left" } ?? "locked")
                try? await self.audit.record([audit], wait: false) // batched: refusals cost no proposal each
                throw throttled
            }
            if let refusal = try conditionsRefusal(opened.user, caller, address: address, now: now) {
                try await refuseByConditions(opened.user, refusal, context, caller, now: now)
            }
            let audit = AuditEntry(
                action: opened.secondFactorRequired ? "login.password" : "login.success",
                actor: DirectoryChanges.owner(of: opened.user), application: caller.owner, records: [opened.user],
                reason: opened.enrolmentOnly ? "enrolment only" : "")
            let alerts = try await proposeWithHistory(opened.transaction, caller: caller, audit: audit) {
                try passwordAccepted(opened, context, caller, now: now)
            }
            guard let alerts else {
                throw RPCError(code: .unavailable, message: "the sign-in met a concurrent change; try again")
            }
            counted(alerts)
            var response = Crm_V1_LoginResponse()
            response.deviceToken = deviceToken
            response.token = opened.token
            response.userID = opened.user.description
            response.passwordChangeOnly = opened.passwordChangeOnly
            response.secondFactorRequired = opened.secondFactorRequired
            response.enrolmentOnly = opened.enrolmentOnly && !opened.passwordChangeOnly
            return response
        }
    }

    /// A refused password: the throttles' counts move on (tried again when a concurrent failure
    /// moved them first) in the transaction that writes its audit entry, naming the user when
    /// one exists (the answer never says). A count that cannot be written is logged.
    func recordFailedSignIn(
        _ refused: SignInRefused, username: String, _ context: SignInContext, _ throttles: SignInThrottles,
        _ caller: Caller
    ) async {
        let source = context.source
        for _ in 0..<3 {
            do {
                let now = sessionNow()
                let failure = try throttles.failure(username: username, user: refused.user, source: source, now: now)
                var reason = "password"
                if failure.locked { reason += "; account locked after \(throttles.policy.lockAfterFailures) failures" }
                if failure.sprayBlocked { reason += "; source \(source) refused for spraying" }
                let audit = AuditEntry(
                    action: "login.failure",
                    actor: refused.user.map(DirectoryChanges.owner(of:)) ?? "crm://user/unknown",
                    application: caller.owner, records: refused.user.map { [$0] } ?? [], outcome: .denied,
                    reason: reason)
                var transaction = failure.transaction
                let alerts: [SecurityAlert.Kind] = failure.locked ? [.accountLocked] : []
                for kind in alerts {
                    transaction.operations += try raise(
                        kind, user: refused.user, caller, now: now,
                        detail: "\(throttles.policy.lockAfterFailures) consecutive failed passwords")
                }
                let applied = try await proposeWithHistory(transaction, caller: caller, audit: audit) {
                    let history = failedAttempt(
                        refused.user, .passwordRefused, address: context.address, userAgent: context.userAgent,
                        now: now)
                    return (history ?? Transaction(operations: []), [])
                }
                if applied != nil {
                    counted(alerts)
                    return
                }
            } catch {
                crm.logger.warning("a refused sign-in was not recorded", metadata: ["error": "\(error)"])
                return
            }
        }
        crm.logger.warning("a refused sign-in was not recorded: its counts kept moving")
    }

    func whoAmI(
        request: ServerRequest<Crm_V1_WhoAmIRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_WhoAmIResponse> {
        ServerResponse(
            message: try await whoAmI(request.message, try admit(request.metadata, context), request.metadata))
    }

    func whoAmI(
        _ message: Crm_V1_WhoAmIRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws
        -> Crm_V1_WhoAmIResponse
    {
        return try await onLeader(access, metadata) { leader, metadata in
            try await leader.whoAmI(message, metadata: metadata)
        } lead: { caller in
            let checked = try await session(metadata, caller)
            guard let user = try crm.changes.read(.user, checked.session.user) else { throw SessionRefusal.unknown }
            let fields = try crm.changes.open(user.record, fields: ["username", "roles"])
            var response = Crm_V1_WhoAmIResponse()
            response.userID = checked.session.user.description
            if case .text(let name)? = fields["username"] { response.username = name }
            if case .texts(let roles)? = fields["roles"] { response.roles = roles }
            response.passwordChangeOnly = checked.session.passwordChangeOnly
            response.application = checked.session.application
            response.enrolmentOnly = checked.session.enrolmentOnly
            response.secondFactorAtMillis = checked.session.secondFactorAtMillis
            if let factor = try identity.directory.credentials(of: checked.session.user)?.credentials.secondFactor {
                response.secondFactorEnrolled = factor.active != nil
                response.recoveryCodesLeft = UInt32(factor.unusedRecoveryCodes)
            }
            return response
        }
    }

    func changePassword(
        request: ServerRequest<Crm_V1_ChangePasswordRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_LoginResponse> {
        ServerResponse(
            message: try await changePassword(request.message, try admit(request.metadata, context), request.metadata))
    }

    func changePassword(
        _ message: Crm_V1_ChangePasswordRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws
        -> Crm_V1_LoginResponse
    {
        return try await onLeader(access, metadata) { leader, metadata in
            try await leader.changePassword(message, metadata: metadata)
        } lead: { caller in
            let checked = try await session(metadata, caller)
            let (token, transaction) = try await identity.signIn().changePassword(
                checked, current: message.currentPassword, new: message.newPassword, now: sessionNow())
            let audit = AuditEntry(
                action: "password.change", actor: DirectoryChanges.owner(of: checked.session.user),
                application: caller.owner, records: [checked.session.user])
            guard case .applied = try await crm.propose(transaction, caller: caller, audit: audit) else {
                throw RPCError(code: .unavailable, message: "the change met a concurrent change; try again")
            }
            var response = Crm_V1_LoginResponse()
            response.token = token
            response.userID = checked.session.user.description
            return response
        }
    }

    func listSessions(
        request: ServerRequest<Crm_V1_ListSessionsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListSessionsResponse> {
        ServerResponse(
            message: try await listSessions(request.message, try admit(request.metadata, context), request.metadata))
    }

    func listSessions(
        _ message: Crm_V1_ListSessionsRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws
        -> Crm_V1_ListSessionsResponse
    {
        return try await onLeader(access, metadata) { leader, metadata in
            try await leader.listSessions(message, metadata: metadata)
        } lead: { caller in
            let checked = try await session(metadata, caller)
            var response = Crm_V1_ListSessionsResponse()
            response.sessions = try identity.sessions.sessions(of: checked.session.user).map { digest, session in
                var info = Crm_V1_SessionInfo()
                info.id = Self.sessionID(digest)
                info.application = session.application
                info.createdAtMillis = session.createdAtMillis
                info.lastSeenMillis = session.lastSeenMillis
                info.current = digest == checked.digest
                info.boundToAddress = session.boundAddress != nil
                return info
            }
            return response
        }
    }

    func logout(
        request: ServerRequest<Crm_V1_LogoutRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_LogoutResponse> {
        ServerResponse(
            message: try await logout(request.message, try admit(request.metadata, context), request.metadata))
    }

    func logout(
        _ message: Crm_V1_LogoutRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws
        -> Crm_V1_LogoutResponse
    {
        return try await onLeader(access, metadata) { leader, metadata in
            try await leader.logout(message, metadata: metadata)
        } lead: { caller in
            let checked = try await session(metadata, caller)
            let user = checked.session.user
            var digest = checked.digest
            if !message.sessionID.isEmpty {
                guard
                    let other = try identity.sessions.sessions(of: user).first(where: {
                        Self.sessionID($0.digest) == message.sessionID
                    })
                else { throw RPCError(code: .notFound, message: "no session of yours has that id") }
                digest = other.digest
            }
            let audit = AuditEntry(
                action: "session.end", actor: DirectoryChanges.owner(of: user), application: caller.owner,
                records: [user], reason: "session \(Self.sessionID(digest))")
            _ = try await crm.propose(identity.sessions.end(digest: digest, of: user), caller: caller, audit: audit)
            return Crm_V1_LogoutResponse()
        }
    }

    /// The id a session is shown by: the first 8 bytes of its digest, in hexadecimal.
    static func sessionID(_ digest: [UInt8]) -> String {
        digest.prefix(8).map { String(format: "%02x", $0) }.joined()
    }
}
