import CRM
import CRMProto
import Foundation
import GRPCCore
import Identity
import KVStore

/// Login events and alerts on the leader: every attempt that checks a password or a code is
/// kept in the user's sealed sign-in history; a password accepted from a new device, network or
/// country, after impossible travel or after several failures raises an alert (an `al/` record,
/// an audit entry and `crm_login_alerts_total`) in the transaction that signs in. A sign-in
/// outside the hours or address ranges of the user's roles is refused.
extension DirectoryService {
    static let maxUserAgentBytes = 256

    /// The sign-in's context: the asserted address and its network, the user agent, the device
    /// token presented (kept when it is one, else a new one) and the place of the address.
    func signInContext(
        _ message: Crm_V1_LoginRequest, address: String?, source: AttemptSource
    ) throws -> (context: SignInContext, deviceToken: String) {
        guard message.userAgent.utf8.count <= Self.maxUserAgentBytes else {
            throw RPCError(code: .invalidArgument, message: "`user_agent` is at most \(Self.maxUserAgentBytes) bytes")
        }
        var token = message.deviceToken
        if DeviceTokens.digest(token) == nil { token = try DeviceTokens.generate() }
        let context = SignInContext(
            address: address, source: source, userAgent: message.userAgent, device: DeviceTokens.digest(token),
            place: address.flatMap(identity.geo.place(of:)))
        return (context, token)
    }

    /// What an accepted password adds to its transaction: the history (with the device known
    /// when the sign-in is complete), the alerts it raises and their audit entries.
    func passwordAccepted(
        _ opened: SignIn.Opened, _ context: SignInContext, _ caller: Caller, now: UInt64
    ) throws -> (transaction: Transaction, alerts: [SecurityAlert.Kind]) {
        let histories = identity.histories
        let (history, version) = try histories.read(opened.user)
        let kinds = LoginSignals.alerts(history, context, failuresBefore: opened.failuresBefore, now: now)
        var next = history.adding(
            .init(
                atMillis: now, outcome: opened.secondFactorRequired ? .passwordAccepted : .signedIn,
                address: context.address, userAgent: context.userAgent)
        ).visited(from: context.source, at: context.place.map { .init(atMillis: now, place: $0) }, now: now)
        if !opened.secondFactorRequired, let device = context.device { next = next.signedIn(device: device) }
        var transaction = try histories.write(next, of: opened.user, readAt: version)
        for (order, kind) in kinds.enumerated() {
            transaction.operations += try raise(
                kind, user: opened.user, caller, now: now,
                detail: kind == .successAfterFailures ? "after \(opened.failuresBefore) failed passwords" : "",
                order: UInt8(order))
        }
        return (transaction, kinds)
    }

    /// Proposes `transaction` with the sign-in history's change `history` makes (and the alerts
    /// it raises). When only the history's condition failed (another sign-in of the same user
    /// wrote it meanwhile) the history is read and changed again; after `historyRounds` the
    /// transaction goes without it, so that many concurrent sign-ins of one user never fail for
    /// their history (the audit trail still holds each one). Answers the alerts raised, or nil
    /// when a condition of `transaction` itself failed.
    func proposeWithHistory(
        _ transaction: Transaction, caller: Caller, audit: AuditEntry,
        _ history: () throws -> (transaction: Transaction, alerts: [SecurityAlert.Kind])
    ) async throws -> [SecurityAlert.Kind]? {
        for round in 0...Self.historyRounds {
            var combined = transaction
            var alerts: [SecurityAlert.Kind] = []
            if round < Self.historyRounds {
                let events = try history()
                combined.conditions += events.transaction.conditions
                combined.operations += events.transaction.operations
                alerts = events.alerts
            } else {
                crm.logger.warning("a sign-in's history was not written: other sign-ins of the user kept changing it")
            }
            switch try await crm.propose(combined, caller: caller, audit: audit) {
            case .applied: return alerts
            case .conditionFailed(let index, _) where index >= transaction.conditions.count: continue
            case .conditionFailed: return nil
            }
        }
        return nil
    }

    static let historyRounds = 4

    /// The operations that raise `kind`: its `al/` record and its audit entry.
    func raise(
        _ kind: SecurityAlert.Kind, user: CRMID?, _ caller: Caller, now: UInt64, detail: String = "", order: UInt8 = 0
    ) throws -> [TransactionOperation] {
        let alert = SecurityAlert(kind: kind, atMillis: now, user: user, application: caller.owner, detail: detail)
        let entry = AuditEntry(
            action: "alert." + kind.name, actor: user.map(DirectoryChanges.owner(of:)) ?? caller.owner,
            application: caller.owner, records: user.map { [$0] } ?? [], reason: detail)
        return [try identity.alerts.raise(alert, order: order), crm.trail.append(entry)]
    }

    /// Counts alerts that were raised (their transaction applied).
    func counted(_ kinds: [SecurityAlert.Kind]) {
        for kind in kinds { metrics?.loginAlerts[kind]?.increment() }
    }

    /// The history's operations for an attempt that failed (nil when nobody is named, or the
    /// history cannot be read: the failure itself is still counted and audited).
    func failedAttempt(
        _ user: CRMID?, _ outcome: LoginHistory.Outcome, address: String?, userAgent: String, now: UInt64
    ) -> Transaction? {
        guard let user, let (history, version) = try? identity.histories.read(user) else { return nil }
        let next = history.adding(.init(atMillis: now, outcome: outcome, address: address, userAgent: userAgent))
        return try? identity.histories.write(next, of: user, readAt: version)
    }

    /// Why the user's roles refuse a sign-in from `address` now (their hours or address
    /// ranges; a second factor is asked for by the sign-in itself), or nil.
    func conditionsRefusal(_ user: CRMID, _ caller: Caller, address: String?, now: UInt64) throws -> String? {
        guard let record = try crm.changes.read(.user, user) else { return nil }
        var names: [String] = []
        if case .texts(let held)? = try crm.changes.open(record.record, fields: ["roles"])["roles"] { names = held }
        let access = Access(roles: try identity.roles(names).map(\.role), ceiling: try ceiling(caller)?.map(\.role))
        return access.conditions.refusal(
            address: address, at: Date(timeIntervalSince1970: Double(now) / 1000), mfa: true)
    }

    /// Records a sign-in its roles' conditions refuse, and answers PERMISSION_DENIED naming them.
    func refuseByConditions(
        _ user: CRMID, _ refusal: String, _ context: SignInContext, _ caller: Caller, now: UInt64
    ) async throws -> Never {
        let audit = AuditEntry(
            action: "login.failure", actor: DirectoryChanges.owner(of: user), application: caller.owner,
            records: [user], outcome: .denied, reason: refusal)
        if let history = failedAttempt(
            user, .refusedByConditions, address: context.address, userAgent: context.userAgent, now: now)
        {
            _ = try? await crm.propose(history, caller: caller, audit: audit)
        } else {
            try? await self.audit.record([audit], wait: false)
        }
        throw RPCError(code: .permissionDenied, message: "\(refusal); signing in now is refused")
    }

    // MARK: Alerts API

    /// Alerts are read by security administrators and auditors.
    private func requireAlertReader(_ metadata: Metadata, _ caller: Caller) async throws {
        let (checked, access) = try await acting(metadata, caller, needs: nil)
        guard access.permissions.contains(.userAdmin) || access.permissions.contains(.auditRead) else {
            await auditDenied(checked.session.user, caller, "alerts need user.admin or audit.read")
            throw RPCError(code: .permissionDenied, message: "alerts need the permission user.admin or audit.read")
        }
    }

    static let maxWatches = 16

    func listAlerts(
        request: ServerRequest<Crm_V1_ListAlertsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListAlertsResponse> {
        ServerResponse(
            message: try await listAlerts(request.message, try admit(request.metadata, context), request.metadata))
    }

    func listAlerts(
        _ message: Crm_V1_ListAlertsRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_ListAlertsResponse {
        try crm.checkServing()
        return try await CRMIdentity.mapped {
            try await crm.mapped {
                try await requireAlertReader(metadata, access.caller)
                let limit = message.limit == 0 ? 100 : Int(message.limit)
                guard (1...1_000).contains(limit) else {
                    throw RPCError(code: .invalidArgument, message: "`limit` is 1 to 1000")
                }
                var response = Crm_V1_ListAlertsResponse()
                response.alerts = try alerts(after: try cursor(message.after), limit: limit).map { $0.1 }
                return response
            }
        }
    }

    /// The alerts after `after`, then each new one as it is raised, read from this member after
    /// a read barrier every half second; the stream ends when the session does (checked each
    /// round) or the caller goes. At most `maxWatches` streams per member.
    func watchAlerts(
        request: ServerRequest<Crm_V1_ListAlertsRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<Crm_V1_AlertInfo> {
        let access = try admit(request.metadata, context)
        try crm.checkServing()
        let start = try cursor(request.message.after)
        try await CRMIdentity.mapped { try await requireAlertReader(request.metadata, access.caller) }
        guard identity.watches.enter(limit: Self.maxWatches) else {
            throw RPCError(code: .resourceExhausted, message: "this member serves \(Self.maxWatches) alert watches")
        }
        return StreamingServerResponse { writer in
            defer { identity.watches.leave() }
            var position = start
            while !Task.isCancelled {
                let batch = try await CRMIdentity.mapped {
                    try await crm.mapped {
                        try await crm.waitForRead(serializable: false)
                        _ = try await authenticated(request.metadata, access.caller, barrier: false)
                        return try alerts(after: position, limit: 100)
                    }
                }
                for (next, alert) in batch {
                    try await writer.write(alert)
                    position = next
                }
                if batch.count < 100 { try await Task.sleep(for: .milliseconds(500)) }
            }
            return [:]
        }
    }

    private func cursor(_ text: String) throws -> SecurityAlerts.Cursor {
        guard let cursor = SecurityAlerts.Cursor(text: text) else {
            throw RPCError(code: .invalidArgument, message: "`after` is an alert's cursor")
        }
        return cursor
    }

    private func alerts(
        after cursor: SecurityAlerts.Cursor, limit: Int
    ) throws -> [(SecurityAlerts.Cursor, Crm_V1_AlertInfo)] {
        try identity.alerts.after(cursor, limit: limit).map { cursor, alert in
            var info = Crm_V1_AlertInfo()
            info.cursor = cursor.text
            info.kind = alert.kind.name
            info.timeMs = alert.atMillis
            info.userID = alert.user?.description ?? ""
            info.application = alert.application
            info.detail = alert.detail
            return (cursor, info)
        }
    }
}
