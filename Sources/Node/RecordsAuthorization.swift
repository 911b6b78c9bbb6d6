import CRM
import CRMProto
import Foundation
import GRPCCore
import Identity
import KVStore

/// Who a records call acts as and what they may do: the signed-in user, their teams and their
/// rights through the application, and the versions those rights were read at. A write carries
/// `pins` as conditions, so that a permission change between the check and the commit (an
/// epoch raised, a role or the application's principal edited) makes it fail whole.
struct Actor: Sendable {
    /// The owner string of what the user creates (`crm://user/<id>`).
    let owner: String
    /// The application the call came through (its certificate's identity).
    let application: String
    /// The signed-in user.
    let user: CRMID
    let teams: Set<CRMID>
    /// The user's rights through the application.
    let access: Access
    let pins: [TransactionCondition]
    /// The exfiltration guard stopped this user's personal reads (until a user administrator
    /// lifts it with `UnlockUser`).
    var readsHeld = false

    /// The audit entry of `action` by this user on record `id` of `entity` (its data subject,
    /// when it has one), naming the fields written.
    func audit(
        _ action: String, _ entity: EntityCode, _ id: CRMID, subject: CRMID?, fields: [UInt16] = [],
        requestID: String = ""
    ) -> AuditEntry {
        AuditEntry(
            action: action, actor: owner, application: application, entity: entity, records: [id],
            subjects: subject.map { [$0] } ?? [], fields: fields, requestID: requestID)
    }

    /// Whom a list's page tokens are bound to: the user through this application.
    var pageTokenHolder: String { owner == application ? owner : owner + " via " + application }

    /// The scope `action` has on `entity`; refused when it has none.
    func scope(_ action: ObjectAction, on entity: EntityCode) throws -> Scope {
        let scope = access.scope(action, on: entity)
        guard scope != .none else {
            throw RPCError(
                code: .permissionDenied, message: "your roles do not allow \(action.rawValue) on \(entity.name)")
        }
        return scope
    }

    /// Whether `record` is within `scope` for this user.
    func reaches(_ record: StoredRecord, within scope: Scope) -> Bool {
        Access.inScope(scope, owner: record.owner, teams: record.teams, user: owner, userTeams: teams)
    }

    /// Whether `action`, whose scope here is `scope`, reaches `record`: by the scope, or by a
    /// share of that one record with the user or one of their teams. Answers the conditions a
    /// write relying on it carries (none for the scope, the share's version for a share); nil
    /// when it does not reach (the caller answers NOT_FOUND, as for an id that does not exist).
    func reach(
        _ action: ObjectAction, _ record: StoredRecord, within scope: Scope, shares: RecordShares
    ) throws -> [TransactionCondition]? {
        if reaches(record, within: scope) { return [] }
        guard scope != .none else { return nil }
        return try shares.opening(record.entity, record.id, for: action, user: user, teams: teams).map { [$0] }
    }

    /// The fields of `definition` this user may read.
    func readable(_ definition: EntityDefinition) -> Set<String> {
        Set(
            definition.fieldsInUse.filter { access.fieldAccess($0, on: definition.code) != .none }.map(\.name))
    }

    /// The fields a read opens: those asked for (nil: all) that the user may read. A field the
    /// user may not read is answered like one the entity does not have.
    func fieldsToOpen(_ asked: Set<String>?, _ definition: EntityDefinition) throws -> Set<String> {
        let readable = readable(definition)
        for name in asked ?? [] where !readable.contains(name) {
            throw RecordError.unknownField(entity: definition.code, name: name)
        }
        let fields = asked ?? readable
        if readsHeld, fields.contains(where: { definition.field(named: $0)?.personal == true }) {
            throw RPCError(
                code: .permissionDenied,
                message:
                    "your personal-data reads are stopped: you read more data subjects in an hour than this CRM "
                    + "allows; a user administrator can lift it (crmctl users unlock), or ask for non-personal fields")
        }
        return fields
    }

    /// The fields the answer to this user's write shows: those they may read, without the
    /// personal ones while their personal reads are stopped.
    func fieldsAfterWrite(_ definition: EntityDefinition) -> Set<String> {
        let readable = readable(definition)
        guard readsHeld else { return readable }
        return readable.filter { definition.field(named: $0)?.personal != true }
    }

    /// Refuses the whole write when it touches a field the user may not edit, naming the first.
    func requireEditable(_ names: some Sequence<String>, _ definition: EntityDefinition) throws {
        for name in names.sorted() {
            guard let field = definition.field(named: name) else { continue } // refused later as unknown
            guard access.fieldAccess(field, on: definition.code) == .edit else {
                throw RPCError(
                    code: .permissionDenied,
                    message: "your roles do not allow editing \(definition.code.name).\(name); nothing was written")
            }
        }
    }

    func has(_ permission: Permission) -> Bool { access.permissions.contains(permission) }

    /// Refuses a permission the user lacks.
    func require(_ permission: Permission) throws {
        guard !has(permission) else { return }
        throw RPCError(code: .permissionDenied, message: "this needs the permission \(permission.rawValue)")
    }

    /// `transaction` conditioned on the rights it was checked with.
    func pinned(_ transaction: Transaction) -> Transaction {
        var pinned = transaction
        pinned.conditions += pins
        return pinned
    }
}

extension DirectoryService {
    /// The actor of a records call, checked in order: the application's principal, the session,
    /// the roles' conditions. Called after the read barrier (reads) or on the leader (writes).
    /// Before the first user is bootstrapped nobody may use records (FAILED_PRECONDITION).
    func actor(_ access: RecordsService.Call) async throws -> Actor {
        let caller = access.caller
        guard try crm.changes.kv.crmValue(identity.directory.bootstrapMarker) != nil else {
            throw RPCError(
                code: .failedPrecondition,
                message: "records are used by signed-in users: bootstrap the first user (crmctl users bootstrap)")
        }
        let started = ContinuousClock.now
        defer { metrics?.authorizationDuration.record(ContinuousClock.now - started) }
        return try await CRMIdentity.mapped {
            let (checked, ceiling) = try await authenticated(access.credentials, caller, barrier: false)
            try DirectoryService.requireUnrestricted(checked.session)
            let user = checked.session.user
            var names: [String] = []
            if case .texts(let held)? = try crm.changes.open(checked.user, fields: ["roles"])["roles"] {
                names = held
            }
            let roles = try identity.roles(names)
            let rights = Access(roles: roles.map(\.role), ceiling: ceiling?.map(\.role))
            if let refusal = rights.conditions.refusal(
                address: try asserted(access.credentials, caller),
                at: Date(timeIntervalSince1970: Double(sessionNow()) / 1000),
                mfa: checked.session.secondFactorAtMillis > 0)
            {
                await auditDenied(user, caller, "\(refusal)")
                throw RPCError(code: .permissionDenied, message: "\(refusal); this call is refused")
            }
            var pins: [TransactionCondition] = [
                .version(key: Credentials.key(workspace: crm.changes.workspace, user: user), checked.credentialsVersion)
            ]
            pins += (roles + (ceiling ?? [])).map { .version(key: $0.key, $0.version) }
            let principals = PrincipalChanges(records: crm.changes)
            if case .client(let name) = caller.identity, let principal = try principals.read(name) {
                pins.append(.version(key: principals.key(name), principal.version))
            }
            return Actor(
                owner: DirectoryChanges.owner(of: user), application: caller.owner, user: user,
                teams: Set(checked.user.teams),
                access: rights, pins: pins,
                readsHeld: try ReadHolds(kv: crm.changes.kv, workspace: crm.changes.workspace).isHeld(user))
        }
    }
}
