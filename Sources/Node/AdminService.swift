import CRM
import CRMProto
import Engine
import Foundation
import GRPCCore
import Identity
import KVStore
import Logging
import Raft
import Storage

/// The admin API (`crm.v1.Admin`), for clients listed under `admins` in the config.
struct AdminService: Crm_V1_Admin.SimpleServiceProtocol {
    let engine: RaftEngine
    let storage: StorageEngine
    let crm: CRMRecords
    /// Sign-in on this member (its one bounded password hasher).
    let identity: CRMIdentity
    let config: NodeConfig
    let authorization: Authorization
    let logger: Logger
    /// The health monitor's latest findings about this member.
    let health: @Sendable () -> HealthSnapshot
    /// The other members as this node's polls see them.
    let peers: @Sendable () -> [NodeID: PeerObservation]
    /// Every member's addresses (config and the replicated directory).
    let directory: @Sendable () -> [NodeID: MemberEndpoints]
    /// Called when `Verify` finds damage.
    let raiseCorrupt: @Sendable (String) -> Void
    /// Writes the entries of operators' acts on this member to the cluster's audit trail.
    let audit: AuditRecorder
    /// When this member last took a backup, for BACKUP_STALE and `/metrics`.
    let backupStatus: BackupStatus

    func status(request: Crm_V1_StatusRequest, context: ServerContext) async throws -> Crm_V1_StatusResponse {
        _ = try authorization.requireAdmin(context)
        let status = engine.currentStatus
        var response = Crm_V1_StatusResponse()
        response.memberID = status.id
        response.role = Self.role(status.role, learner: status.learners.contains(status.id))
        response.term = status.term
        response.leaderID = status.leader
        response.commitIndex = status.commitIndex
        response.appliedIndex = status.appliedIndex
        response.firstIndex = status.firstIndex
        response.lastIndex = status.lastIndex
        response.snapshotIndex = status.snapshotIndex
        response.members = members(status)
        let snapshot = health()
        response.health = Self.proto(snapshot.report)
        response.alarms = snapshot.alarms.map(Self.proto)
        response.deadMembers = snapshot.dead.map { dead in
            var proto = Crm_V1_DeadMember()
            proto.id = dead.id
            proto.silentMs = dead.silentMilliseconds
            proto.replaceCommands = dead.replaceCommands
            return proto
        }
        response.pid = UInt64(ProcessInfo.processInfo.processIdentifier)
        response.version = NodeVersion.current
        // The digest comes with the applied index it was taken at (the loop may have moved on).
        // It reads the whole store: only when asked.
        if request.includeStateHash, let digest = try? engine.kv.stateHash() {
            response.stateHash = digest.hash
            response.appliedIndex = digest.index
        }
        return response
    }

    func listMembers(
        request: Crm_V1_ListMembersRequest, context: ServerContext
    ) async throws -> Crm_V1_ListMembersResponse {
        _ = try authorization.requireAdmin(context)
        var response = Crm_V1_ListMembersResponse()
        response.members = members(engine.currentStatus)
        return response
    }

    /// Records the new member's addresses through the log (so that every member can reach it),
    /// then adds it as a learner.
    func addLearner(request: Crm_V1_AddLearnerRequest, context: ServerContext) async throws -> Crm_V1_MembershipResponse
    {
        let admin = try authorization.requireAdmin(context)
        guard request.id != 0 else { throw RPCError(code: .invalidArgument, message: "member id 0 is reserved") }
        let given = request.endpoints
        var endpoints: MemberEndpoints?
        if !(given.peer.isEmpty && given.client.isEmpty && given.admin.isEmpty) {
            guard let peer = Endpoint(given.peer), let client = Endpoint(given.client),
                let adminEndpoint = Endpoint(given.admin)
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "give the new member's peer, client and admin addresses as host:port")
            }
            endpoints = MemberEndpoints(id: request.id, peer: peer, client: client, admin: adminEndpoint)
        } else if directory()[request.id] == nil {
            throw RPCError(
                code: .invalidArgument,
                message: "member \(request.id) has no known addresses; give its peer, client and admin addresses")
        }
        logger.notice(
            "membership change requested", metadata: ["change": "add learner \(request.id)", "admin": "\(admin)"])
        do {
            var response = Crm_V1_MembershipResponse()
            response.index = try await MembershipChanges(engine: engine).addLearner(request.id, endpoints: endpoints)
            response.members = members(engine.currentStatus)
            return response
        } catch let error as EngineError {
            throw Self.leaderError(error, engine.currentStatus)
        }
    }

    func promoteMember(
        request: Crm_V1_PromoteMemberRequest, context: ServerContext
    ) async throws -> Crm_V1_MembershipResponse {
        try await change(.promote(request.id), by: try authorization.requireAdmin(context))
    }

    func removeMember(
        request: Crm_V1_RemoveMemberRequest, context: ServerContext
    ) async throws -> Crm_V1_MembershipResponse {
        try await change(.remove(request.id), by: try authorization.requireAdmin(context))
    }

    private func change(_ change: ConfigurationChange, by admin: String) async throws -> Crm_V1_MembershipResponse {
        logger.notice("membership change requested", metadata: ["change": "\(change)", "admin": "\(admin)"])
        do {
            let index = try await engine.changeMembership(change)
            var response = Crm_V1_MembershipResponse()
            response.index = index
            response.members = members(engine.currentStatus)
            return response
        } catch let error as EngineError {
            throw Self.leaderError(error, engine.currentStatus)
        }
    }

    func transferLeadership(
        request: Crm_V1_TransferLeadershipRequest, context: ServerContext
    ) async throws -> Crm_V1_TransferLeadershipResponse {
        let admin = try authorization.requireAdmin(context)
        logger.notice(
            "leadership transfer requested", metadata: ["target": "\(request.targetID)", "admin": "\(admin)"])
        do {
            try await engine.transferLeadership(to: request.targetID)
        } catch let error as EngineError {
            throw Self.leaderError(error, engine.currentStatus)
        }
        // The transfer succeeded once this member followed the target: the target leads.
        var response = Crm_V1_TransferLeadershipResponse()
        response.leaderID = request.targetID
        response.term = engine.currentStatus.term
        return response
    }

    func snapshot(request: Crm_V1_SnapshotRequest, context: ServerContext) async throws -> Crm_V1_SnapshotResponse {
        _ = try authorization.requireAdmin(context)
        do {
            let metadata = try await engine.snapshotNow()
            var response = Crm_V1_SnapshotResponse()
            response.index = metadata.index
            response.term = metadata.term
            return response
        } catch let error as EngineError {
            throw LocalKV.rpcError(error)
        }
    }

    func compact(request: Crm_V1_CompactRequest, context: ServerContext) async throws -> Crm_V1_CompactResponse {
        _ = try authorization.requireAdmin(context)
        let started = Date()
        let engine = self.storage
        try await offload { try engine.compact() }
        var response = Crm_V1_CompactResponse()
        response.durationMs = UInt64(Date().timeIntervalSince(started) * 1000)
        return response
    }

    /// Rotates this member's storage data key. The act is in the cluster's audit trail before it
    /// happens (UNAVAILABLE, nothing rotated, while the trail cannot be written); a rotation that
    /// then fails gets a second entry saying so.
    func rotateKeys(request: Crm_V1_RotateKeysRequest, context: ServerContext) async throws -> Crm_V1_RotateKeysResponse
    {
        let admin = try authorization.requireAdmin(context)
        let engine = self.storage
        let was = engine.keyStatus().activeKeyID
        let active = try await audited(
            "keys.rotate_data", by: Caller(identity: .client(admin)),
            reason: "member \(self.engine.id) storage data key \(was)"
        ) { try await offload { try engine.rotateDataKey() } }
        logger.notice("data key rotated", metadata: ["active_key": "\(active)", "admin": "\(admin)"])
        // Old values are re-sealed in the background; the old key retires when that is done.
        let reseal = BackgroundReseal(engine: engine)
        reseal.start()
        let keys = storage.keyStatus()
        var response = Crm_V1_RotateKeysResponse()
        response.activeKeyID = keys.activeKeyID
        response.liveKeyIds = keys.liveKeyIDs
        return response
    }

    /// Runs an operator's `act` once its audit entry has committed, so that no act is without its
    /// entry; if `act` fails, a second entry (outcome failed) records that too.
    func audited<T: Sendable>(
        _ action: String, by caller: Caller, reason: String, _ act: () async throws -> T
    ) async throws -> T {
        do {
            try await audit.record([caller.audit(action, reason: reason)], wait: true)
        } catch let error as RPCError {
            throw RPCError(
                code: error.code, message: "not done: its audit entry could not be written (\(error.message))")
        }
        do {
            return try await act()
        } catch {
            var failed = caller.audit(action, reason: "\(reason): failed")
            failed.outcome = .failed
            try? await audit.record([failed], wait: false)
            throw error
        }
    }

    func verify(request: Crm_V1_VerifyRequest, context: ServerContext) async throws -> Crm_V1_VerifyResponse {
        _ = try authorization.requireAdmin(context)
        let engine = self.storage
        let report = try await offload { try engine.verify() }
        var response = Crm_V1_VerifyResponse()
        response.valuesChecked = report.checked
        response.damaged = report.problems.map { problem in
            var item = Crm_V1_DamagedItem()
            item.family = problem.family.name
            item.keyHex = problem.key?.hexString ?? ""
            item.reason = "\(problem)"
            return item
        }
        if !report.isClean {
            raiseCorrupt(
                "crmctl verify found \(report.problemCount) damaged items; repair: stop the member, move its data_dir aside, restart it empty with join: true and re-add it"
            )
        }
        return response
    }

    // MARK: CRM

    func crmCheck(request: Crm_V1_CRMCheckRequest, context: ServerContext) async throws -> Crm_V1_CRMCheckResponse {
        let admin = try authorization.requireAdmin(context)
        let kv = engine.kv
        let (report, applied) = try await offload { (try CRMCheck(kv: kv).run(), kv.appliedIndex) }
        logger.notice("CRM check", metadata: ["admin": "\(admin)", "problems": "\(report.problems.count)"])
        var response = Crm_V1_CRMCheckResponse()
        response.records = UInt64(report.records)
        response.indexEntries = UInt64(report.indexEntries)
        response.subjectKeys = UInt64(report.subjectKeys)
        response.problems = report.problems
        response.appliedIndex = applied
        return response
    }

    func crmKeyStatus(
        request: Crm_V1_CRMKeyStatusRequest, context: ServerContext
    ) async throws -> Crm_V1_CRMKeyStatusResponse {
        _ = try authorization.requireAdmin(context)
        return try keyStatus()
    }

    func rotateCRMKeys(
        request: Crm_V1_RotateCRMKeysRequest, context: ServerContext
    ) async throws -> Crm_V1_CRMKeyStatusResponse {
        let admin = try authorization.requireAdmin(context)
        try await crm.mapped { try await crm.rotateKeySet(caller: Caller(identity: .client(admin))) }
        return try keyStatus()
    }

    /// The CRM's first user, on the leader, once ever: its password passes the policy and is
    /// hashed here; the transaction's condition refuses a second bootstrap.
    func bootstrapUser(
        request: Crm_V1_BootstrapUserRequest, context: ServerContext
    ) async throws -> Crm_V1_BootstrapUserResponse {
        let admin = try authorization.requireAdmin(context)
        guard crm.isLeader else { throw LocalKV.rpcError(.notLeader(leaderHint: crm.leaderHint)) }
        try crm.checkServing()
        let caller = Caller(identity: .client(admin))
        return try await CRMIdentity.mapped {
            try await crm.mapped {
                if let refusal = PasswordPolicy().refusal(of: request.password, username: request.username) {
                    throw refusal
                }
                try await crm.ensureKeySet(caller: caller)
                let id = try CRMID.random()
                let transaction = try identity.directory.bootstrap(
                    id: id, username: request.username,
                    passwordHash: try await identity.passwordHasher().hash(request.password),
                    principal: caller.owner, now: crm.local.nowMillis())
                let audit = caller.audit("user.bootstrap", records: [id])
                guard case .applied = try await crm.propose(transaction, caller: caller, audit: audit) else {
                    throw RPCError(code: .failedPrecondition, message: "the CRM's first user was bootstrapped already")
                }
                logger.notice("the CRM's first user is bootstrapped", metadata: ["user": "\(id)", "by": "\(admin)"])
                var response = Crm_V1_BootstrapUserResponse()
                response.userID = id.description
                return response
            }
        }
    }

    private func keyStatus() throws -> Crm_V1_CRMKeyStatusResponse {
        var response = Crm_V1_CRMKeyStatusResponse()
        response.memberID = engine.id
        response.problem = crm.keys.problem()?.description ?? ""
        do {
            response.versionInUse = try crm.keys.versionInUse()
            response.storedVersions = try crm.keys.storedVersions()
            if let (job, _) = try RewrapJob.current(in: engine.kv) {
                response.rewrapRunning = true
                response.rewrapFrom = job.from
                response.rewrapTo = job.to
                response.rewrapDone = job.rewrapped
            }
        } catch {
            response.problem = "\(error)"
        }
        return response
    }

    // MARK: Helpers

    /// Runs blocking storage work off the cooperative thread pool.
    func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
            }
        } catch {
            throw RPCError(code: .internalError, message: "\(error)")
        }
    }

    private func members(_ status: EngineStatus) -> [Crm_V1_MemberStatus] {
        let known = directory()
        let observed = peers()
        let own = health().report
        let ids = status.voters.union(status.learners).union(config.members.map(\.id)).sorted()
        return ids.map { id in
            var member = Crm_V1_MemberStatus()
            member.id = id
            member.voter = status.voters.contains(id)
            if id == status.id {
                member.role = Self.role(status.role, learner: status.learners.contains(id))
                member.pid = UInt64(ProcessInfo.processInfo.processIdentifier)
                member.reachable = true
            } else {
                member.role = status.learners.contains(id) ? .learner : (status.leader == id ? .leader : .follower)
                member.lastContactMs = status.lastContactMilliseconds[id] ?? 0
                member.reachable =
                    status.lastContactMilliseconds[id].map {
                        $0 < UInt64(config.tickMilliseconds * config.electionTicks)
                    } ?? false
            }
            if id == status.id {
                member.health = Self.proto(own)
            } else if let report = observed[id]?.report {
                member.health = Self.proto(report)
            }
            if let match = status.matchIndexes[id] {
                member.matchIndex = match
                member.lag = status.lastIndex > match ? status.lastIndex - match : 0
            }
            if let endpoints = known[id] {
                var proto = Crm_V1_Endpoints()
                proto.peer = endpoints.peer.description
                proto.client = endpoints.client.description
                proto.admin = endpoints.admin.description
                if id == status.id { proto.health = config.listen.health.description }
                member.endpoints = proto
            }
            return member
        }
    }

    static func role(_ role: Role, learner: Bool) -> Crm_V1_MemberRole {
        if learner { return .learner }
        switch role {
        case .follower: return .follower
        case .preCandidate: return .preCandidate
        case .candidate: return .candidate
        case .leader: return .leader
        }
    }

    static func proto(_ report: HealthReport) -> Crm_V1_Health {
        var health = Crm_V1_Health()
        switch report.state {
        case .healthy: health.state = .healthy
        case .degraded: health.state = .degraded
        case .down: health.state = .down
        }
        health.reasons = report.reasons
        return health
    }

    static func proto(_ alarm: Alarm) -> Crm_V1_Alarm {
        var proto = Crm_V1_Alarm()
        switch alarm.kind {
        case .noSpace: proto.kind = .nospace
        case .corrupt: proto.kind = .corrupt
        case .crmKey: proto.kind = .crmkey
        case .tamper: proto.kind = .tamper
        case .authAttack: proto.kind = .authAttack
        case .clockSkew: proto.kind = .clockSkew
        case .auditBacklog: proto.kind = .auditBacklog
        case .backupStale: proto.kind = .backupStale
        case .backupGap: proto.kind = .backupGap
        }
        proto.memberID = alarm.memberID
        proto.raisedAtMs = UInt64(alarm.raisedAt.timeIntervalSince1970 * 1000)
        proto.reason = alarm.reason
        return proto
    }

    /// Membership and transfers happen on the leader: say which member that is.
    static func leaderError(_ error: EngineError, _ status: EngineStatus) -> RPCError {
        if case .notLeader(let hint) = error {
            return RPCError(
                code: .failedPrecondition,
                message: hint == 0
                    ? "no leader is known yet; retry shortly"
                    : "member \(status.id) does not lead; send this to the leader, member \(hint) (crmctl --member \(hint) ...)"
            )
        }
        return LocalKV.rpcError(error)
    }
}

/// The version this build reports.
public enum NodeVersion {
    public static let current = "0.1.0"
}
