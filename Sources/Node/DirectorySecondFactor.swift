import CRM
import CRMProto
import GRPCCore
import Identity
import KVStore

/// The second factor on the leader: completing a sign-in with a code, enrolment and its
/// confirmation, step-up, recovery codes and an administrator's reset. Every change is a
/// transaction conditioned on the credentials read, so that a code used twice at once (two
/// fronts) is accepted once; each carries its audit entry.
extension DirectoryService {
    func completeLogin(
        request: ServerRequest<Crm_V1_CompleteLoginRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_LoginResponse> {
        ServerResponse(
            message: try await completeLogin(request.message, try admit(request.metadata, context), request.metadata))
    }

    func completeLogin(
        _ message: Crm_V1_CompleteLoginRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_LoginResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.completeLogin(message, metadata: metadata)
        } lead: { caller in
            try await crm.waitForRead(serializable: false)
            _ = try ceiling(caller)
            let refused = RPCError(code: .unauthenticated, message: SecondFactorRefusal.wrongCode.description)
            let how = message.recoveryCode.isEmpty ? "totp" : "recovery code"
            let address = try asserted(metadata, caller)
            // Made again when the sign-in's own condition failed: a code used twice finds its
            // step taken on the second round and is refused then.
            for _ in 0..<2 {
                let now = sessionNow()
                let completion: SignIn.Completion
                do {
                    completion = try identity.signIn().complete(
                        ticket: message.ticket, code: message.code, recoveryCode: message.recoveryCode,
                        application: caller.owner, factor: try identity.secondFactor(), now: now)
                } catch is SignInRefused {
                    throw refused
                }
                switch completion {
                case .opened(let opened):
                    let audit = AuditEntry(
                        action: "login.success", actor: DirectoryChanges.owner(of: opened.user),
                        application: caller.owner, records: [opened.user], reason: "second factor: \(how)")
                    // A failed condition of the sign-in itself: the same code (or ticket) was used.
                    let applied = try await proposeWithHistory(opened.transaction, caller: caller, audit: audit) {
                        let (history, version) = try identity.histories.read(opened.user)
                        var next = history.adding(
                            .init(atMillis: now, outcome: .signedIn, address: address, userAgent: ""))
                        if let device = opened.device { next = next.signedIn(device: device) }
                        return (try identity.histories.write(next, of: opened.user, readAt: version), [])
                    }
                    guard applied != nil else { continue }
                    var response = Crm_V1_LoginResponse()
                    response.token = opened.token
                    response.userID = opened.user.description
                    return response
                case .refused(let counted, let refusal, let locks):
                    countFailedSignIn(caller)
                    if var counted, let user = TicketTokens.parse(message.ticket)?.user {
                        let audit = AuditEntry(
                            action: "login.failure", actor: DirectoryChanges.owner(of: user),
                            application: caller.owner, records: [user], outcome: .denied,
                            reason: "second factor (\(how)): \(refusal)")
                        if let history = failedAttempt(
                            user, .secondFactorRefused, address: address, userAgent: "", now: now)
                        {
                            counted.conditions += history.conditions
                            counted.operations += history.operations
                        }
                        if locks {
                            counted.operations += try raise(
                                .secondFactorLocked, user: user, caller, now: now, detail: "too many wrong codes")
                        }
                        // A lost count is one more try.
                        if case .applied? = try? await crm.propose(counted, caller: caller, audit: audit), locks {
                            self.counted([.secondFactorLocked])
                        }
                    }
                    throw refused
                }
            }
            throw refused
        }
    }

    func enrolSecondFactor(
        request: ServerRequest<Crm_V1_EnrolSecondFactorRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_EnrolSecondFactorResponse> {
        ServerResponse(
            message: try await enrolSecondFactor(
                request.message, try admit(request.metadata, context), request.metadata))
    }

    func enrolSecondFactor(
        _ message: Crm_V1_EnrolSecondFactorRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_EnrolSecondFactorResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.enrolSecondFactor(message, metadata: metadata)
        } lead: { caller in
            let (checked, credentials) = try await factorSession(metadata, caller)
            if credentials.credentials.secondFactor.active != nil { try requireStepUp(checked, credentials) }
            let user = checked.session.user
            let (secret, next) = try identity.secondFactor().enrol(user, credentials.credentials)
            try await commit(
                identity.directory.replace(user, credentials, with: next), caller, as: user, "mfa.enrol",
                records: [user])
            let fields = try crm.changes.open(checked.user, fields: ["username"])
            guard case .text(let username)? = fields["username"] else { throw SessionRefusal.unknown }
            var response = Crm_V1_EnrolSecondFactorResponse()
            response.secretBase32 = Base32.encode(secret)
            response.provisioningUri = TOTP.provisioningURI(secret: secret, account: username, issuer: "CRM")
            return response
        }
    }

    func confirmSecondFactor(
        request: ServerRequest<Crm_V1_ConfirmSecondFactorRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ConfirmSecondFactorResponse> {
        ServerResponse(
            message: try await confirmSecondFactor(
                request.message, try admit(request.metadata, context), request.metadata))
    }

    func confirmSecondFactor(
        _ message: Crm_V1_ConfirmSecondFactorRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_ConfirmSecondFactorResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.confirmSecondFactor(message, metadata: metadata)
        } lead: { caller in
            let (checked, credentials) = try await factorSession(metadata, caller)
            var recoveryCodes: [String] = []
            let token = try await passSecondFactor(checked, credentials, caller, "mfa.confirm") { factor, now in
                let confirmed = try factor.confirm(
                    checked.session.user, credentials.credentials, code: message.code, now: now)
                recoveryCodes = confirmed.recoveryCodes
                return confirmed.next
            }
            var response = Crm_V1_ConfirmSecondFactorResponse()
            response.token = token
            response.recoveryCodes = recoveryCodes
            return response
        }
    }

    func stepUp(
        request: ServerRequest<Crm_V1_StepUpRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_LoginResponse> {
        ServerResponse(
            message: try await stepUp(request.message, try admit(request.metadata, context), request.metadata))
    }

    func stepUp(
        _ message: Crm_V1_StepUpRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_LoginResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.stepUp(message, metadata: metadata)
        } lead: { caller in
            let (checked, credentials) = try await factorSession(metadata, caller)
            let how = message.recoveryCode.isEmpty ? "totp" : "recovery code"
            let token = try await passSecondFactor(checked, credentials, caller, "mfa.step_up", reason: how) {
                factor, now in
                try factor.verified(
                    checked.session.user, credentials.credentials, code: message.code,
                    recoveryCode: message.recoveryCode, now: now)
            }
            var response = Crm_V1_LoginResponse()
            response.token = token
            response.userID = checked.session.user.description
            return response
        }
    }

    func regenerateRecoveryCodes(
        request: ServerRequest<Crm_V1_RegenerateRecoveryCodesRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_RecoveryCodesResponse> {
        ServerResponse(
            message: try await regenerateRecoveryCodes(
                request.message, try admit(request.metadata, context), request.metadata))
    }

    func regenerateRecoveryCodes(
        _ message: Crm_V1_RegenerateRecoveryCodesRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_RecoveryCodesResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.regenerateRecoveryCodes(message, metadata: metadata)
        } lead: { caller in
            let (checked, credentials) = try await factorSession(metadata, caller)
            try requireStepUp(checked, credentials)
            let user = checked.session.user
            let (codes, next) = try identity.secondFactor().regenerated(user, credentials.credentials)
            try await commit(
                identity.directory.replace(user, credentials, with: next), caller, as: user, "mfa.recovery_codes",
                records: [user])
            var response = Crm_V1_RecoveryCodesResponse()
            response.recoveryCodes = codes
            return response
        }
    }

    func resetSecondFactor(
        request: ServerRequest<Crm_V1_ResetSecondFactorRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await resetSecondFactor(
                request.message, try admit(request.metadata, context), request.metadata))
    }

    func resetSecondFactor(
        _ message: Crm_V1_ResetSecondFactorRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_UserInfo {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.resetSecondFactor(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin, stepUp: true)
            guard let target = CRMID(hex: message.userID) else { throw RecordError.badRequest("user_id is not an id") }
            guard target != checked.session.user else {
                throw RPCError(
                    code: .permissionDenied, message: "nobody resets their own second factor; ask another administrator"
                )
            }
            guard try crm.changes.read(.user, target) != nil,
                let credentials = try identity.directory.credentials(of: target)
            else { throw RecordError.notFound(.user, target) }
            let next = try identity.secondFactor().reset(credentials.credentials)
            try await commit(
                identity.directory.replace(target, credentials, with: next), caller, as: checked.session.user,
                "mfa.reset", records: [target])
            return try userInfo(target)
        }
    }

    // MARK: Helpers

    /// The session (enrolment-only sessions allowed; password-change-only ones not) and the
    /// user's credentials as read.
    func factorSession(
        _ metadata: Metadata, _ caller: Caller
    ) async throws -> (CheckedSession, VersionedCredentials) {
        let checked = try await session(metadata, caller)
        guard !checked.session.passwordChangeOnly else {
            throw RPCError(code: .permissionDenied, message: "change the password first (crmctl password)")
        }
        guard let credentials = try identity.directory.credentials(of: checked.session.user) else {
            throw SessionRefusal.unknown
        }
        return (checked, credentials)
    }

    /// Refuses a session that may only change its password or enrol a second factor.
    static func requireUnrestricted(_ session: Session) throws {
        if session.passwordChangeOnly {
            throw RPCError(code: .permissionDenied, message: "change the password first (crmctl password)")
        }
        if session.enrolmentOnly {
            throw RPCError(
                code: .permissionDenied,
                message: "enrol a second factor first (crmctl mfa enrol, then crmctl mfa confirm)")
        }
    }

    /// Refuses unless the session passed a second factor within the step-up window. A user
    /// without one, where the cluster does not require one, has nothing to step up with.
    func requireStepUp(_ checked: CheckedSession, _ credentials: VersionedCredentials?) throws {
        if !identity.mfaRequired, credentials?.credentials.secondFactor.active == nil { return }
        let sessions = identity.sessions
        guard checked.session.secondFactorWithin(sessions.policy.stepUpMillis, of: sessionNow()) else {
            throw RPCError(
                code: .failedPrecondition,
                message: "this needs a second factor within the last 10 minutes: step up first (crmctl mfa step-up)")
        }
    }

    /// A second factor passed in a session (confirming an enrolment, or a step-up): `change`
    /// makes the credentials after it; they are written with a new token for the session (the
    /// old one ends), whose second factor is now. A wrong code is counted; a code used
    /// meanwhile elsewhere (a failed condition) is a wrong code. Answers the new token.
    private func passSecondFactor(
        _ checked: CheckedSession, _ credentials: VersionedCredentials, _ caller: Caller, _ action: String,
        reason: String = "", change: (SecondFactorChanges, UInt64) throws -> Credentials
    ) async throws -> String {
        let user = checked.session.user
        let factor = try identity.secondFactor()
        let now = sessionNow()
        let next: Credentials
        do {
            next = try change(factor, now)
        } catch SecondFactorRefusal.wrongCode {
            try await countFailure(user, credentials, factor, caller, action)
            throw SecondFactorRefusal.wrongCode
        }
        let token = try SessionTokens.generate()
        var transaction = identity.directory.replace(user, credentials, with: next)
        let renewed = identity.sessions.renewal(
            of: checked, token: token, credentials: next, now: now, secondFactorAt: now)
        transaction.conditions += renewed.conditions
        transaction.operations += renewed.operations
        do {
            try await commit(transaction, caller, as: user, action, records: [user], reason: reason)
        } catch let error as RPCError where error.code == .aborted {
            throw SecondFactorRefusal.wrongCode
        }
        return token
    }

    /// Counts a wrong code against the user's factor (ten in 15 minutes lock it for 15), with
    /// its audit entry. A count lost to a concurrent change is one more try, no more.
    private func countFailure(
        _ user: CRMID, _ credentials: VersionedCredentials, _ factor: SecondFactorChanges, _ caller: Caller,
        _ action: String
    ) async throws {
        let next = factor.failed(credentials.credentials, now: sessionNow())
        let audit = AuditEntry(
            action: action, actor: DirectoryChanges.owner(of: user), application: caller.owner, records: [user],
            outcome: .denied, reason: "wrong code")
        _ = try? await crm.propose(
            identity.directory.replace(user, credentials, with: next), caller: caller, audit: audit)
    }
}
