import CRM
import Identity
import KVStore

/// Automatic isolation under a cluster-wide sign-in attack: the leader counts every failed
/// sign-in (it decides them all); past `crm.auth_attack_failures_per_minute` it raises
/// AUTH_ATTACK (the health monitor's alarm) with an `auth_attack` alert, and with
/// `crm.isolate_clients` blocks the application behind 90% or more of the minute's failures
/// (`crmctl clients unblock` lifts it). Both are written without holding up the answer.
extension DirectoryService {
    /// Times a conditioned block is tried again when the principal changed under it.
    static let blockAttempts = 3

    /// Counts one failed or throttled sign-in through `caller`'s application.
    func countFailedSignIn(_ caller: Caller) {
        let decision = identity.attacks.failed(application: Self.applicationName(caller), now: WallClock.nowMillis())
        guard decision.began || decision.block != nil else { return }
        Task { await respond(to: decision, caller) }
    }

    /// The principal name behind `caller` (sign-ins come through applications' certificates).
    static func applicationName(_ caller: Caller) -> String {
        if case .client(let name) = caller.identity { return name }
        return caller.owner
    }

    private func respond(to decision: AuthAttackWatch.Decision, _ caller: Caller) async {
        do {
            if decision.began { try await raiseAuthAttack(decision) }
            if let name = decision.block { try await block(name, decision, caller) }
        } catch {
            crm.logger.warning("a response to a sign-in attack was not written", metadata: ["error": "\(error)"])
        }
    }

    private func raiseAuthAttack(_ decision: AuthAttackWatch.Decision) async throws {
        let member = Caller(identity: .member(crm.engine.id))
        let detail =
            "\(decision.failures) failed sign-ins across the cluster within a minute (bound \(identity.attacks.threshold))"
        crm.logger.critical("sign-in attack", metadata: ["failures": "\(decision.failures)"])
        let operations = try raise(.authAttack, user: nil, member, now: sessionNow(), detail: detail)
        if case .applied = try await crm.propose(Transaction(operations: operations), caller: member, audit: nil) {
            counted([.authAttack])
        }
    }

    /// Blocks the application `name` (a conditioned write of its principal, with a
    /// `client_blocked` alert and a `principal.block` entry). An operator's tool is never
    /// blocked (that would lock the operators out), nor an application without a principal.
    private func block(_ name: String, _ decision: AuthAttackWatch.Decision, _ caller: Caller) async throws {
        let why =
            "\(decision.blockedFailures) of \(decision.failures) failed sign-ins within a minute came through it"
        guard !authorization.admins.contains(name) else {
            crm.logger.critical(
                "an operator's tool is behind a sign-in attack; it is not blocked", metadata: ["client": "\(name)"])
            return
        }
        let principals = PrincipalChanges(records: crm.changes)
        let member = Caller(identity: .member(crm.engine.id))
        for _ in 0..<Self.blockAttempts {
            guard let (found, version) = try principals.read(name), !found.blocked else { return }
            var principal = found
            principal.blocked = true
            var transaction = try principals.put(principal, replacing: version)
            transaction.operations += try raise(
                .clientBlocked, user: nil, caller, now: sessionNow(),
                detail: why + "; crmctl clients unblock \(name) lifts it")
            let audit = AuditEntry(
                action: "principal.block", actor: member.owner, application: caller.owner, reason: "\(name): \(why)")
            if case .applied = try await crm.propose(transaction, caller: member, audit: audit) {
                crm.logger.critical("application blocked under a sign-in attack", metadata: ["client": "\(name)"])
                counted([.clientBlocked])
                return
            }
        }
        crm.logger.warning("an application behind a sign-in attack was not blocked: its principal kept changing")
    }
}
