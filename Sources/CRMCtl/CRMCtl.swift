import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// crmctl: inspect and operate a CRM cluster over its admin and client APIs.
@main
struct CRMCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crmctl",
        abstract: "Inspect and operate a CRM cluster.",
        discussion: """
            Finds the cluster in \(ClusterFile.defaultPath) (written by `make up`), or in the file named by \
            --cluster or $CRM_CLUSTER; --endpoint (or $CRM_ENDPOINT) talks to one member directly, with \
            --ca/--cert/--key (or $CRM_CA, $CRM_CERT, $CRM_KEY) for mutual TLS.

            Exit status: 0 done; 1 the cluster refused or failed the operation; 2 bad usage or \
            configuration; 3 not found (kv get) or not swapped (kv cas); 4 no member could be reached.
            """,
        subcommands: [
            Status.self, Alarms.self, Members.self, Leader.self, SnapshotCommand.self, Compact.self, Keys.self,
            Verify.self, KV.self, Records.self, CRMCommand.self, Users.self, Teams.self, Roles.self, Clients.self,
            Audit.self, BackupCommand.self, MFA.self, Alerts.self,
            Login.self,
            Password.self,
            WhoAmI.self, Logout.self,
        ]
    )

    /// Runs the command; failures print one clear line and set the documented exit status.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as Failure {
            FileHandle.standardError.write(Data("crmctl: \(failure)\n".utf8))
            Foundation.exit(failure.exitCode)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            // Help and version requests exit 0; every usage mistake exits 2, as documented.
            if exitCode(for: error) == .success { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }
}

/// Options every command takes.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The cluster file (default: $CRM_CLUSTER or \(ClusterFile.defaultPath)).")
    var cluster: String?

    @Option(help: "Talk to this member's admin (or, for kv, client) endpoint host:port instead of the cluster file's.")
    var endpoint: String?

    @Option(
        help: "Which member of the cluster file to talk to (default: any that answers; the leader where it matters).")
    var member: UInt64?

    @Option(help: "CA bundle (PEM).") var ca: String?
    @Option(help: "Client certificate (PEM), naming crm://client/<name>.") var cert: String?
    @Option(help: "Client private key (PEM).") var key: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Seconds to wait for each member.")
    var timeout: Double = 5
}

// MARK: - Commands

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every member: role, term, leader, log positions, lag, reachability, health, process id.")
    @OptionGroup var options: ConnectionOptions
    @Flag(help: "Also each member's state hash, to compare members (each reads its whole store).") var hash = false

    func run() async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let statuses = await cluster.statuses(hashes: hash)
        if options.json {
            try Output.json(StatusReport(statuses: statuses, cluster: cluster))
        } else {
            Output.statusTable(statuses, cluster: cluster)
        }
        if statuses.allSatisfy({ $0.status == nil }) { throw ExitCode(4) }
    }
}

struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or change the members (one change at a time).",
        subcommands: [List.self, AddLearner.self, Promote.self, Remove.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let response = try await cluster.onAnyMember { try await $0.admin.listMembers(Crm_V1_ListMembersRequest()) }
            if options.json {
                try Output.json(response.members.map(MemberJSON.init))
            } else {
                Output.memberTable(response.members)
            }
        }
    }

    struct AddLearner: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-learner", abstract: "Add a member that receives the log but does not vote yet.")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The new member's id.") var id: UInt64
        @Option(help: "Its peer address host:port.") var peer: String?
        @Option(help: "Its client API address host:port.") var client: String?
        @Option(help: "Its admin API address host:port.") var admin: String?
        func validate() throws {
            let given = [peer, client, admin].compactMap { $0 }
            if !given.isEmpty && given.count != 3 {
                throw ValidationError(
                    "give all of --peer, --client and --admin, or none (when every member's config lists it)")
            }
        }
        func run() async throws {
            var request = Crm_V1_AddLearnerRequest()
            request.id = id
            request.endpoints.peer = peer ?? ""
            request.endpoints.client = client ?? ""
            request.endpoints.admin = admin ?? ""
            let sent = request
            try await Members.change(
                options,
                "added member \(id) as a learner; promote it once it has caught up (crmctl status shows its lag)"
            ) {
                try await $0.admin.addLearner(sent)
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The learner to make a voter.") var id: UInt64
        func run() async throws {
            var request = Crm_V1_PromoteMemberRequest()
            request.id = id
            let sent = request
            try await Members.change(options, "member \(id) is now a voter") { try await $0.admin.promoteMember(sent) }
        }
    }

    struct Remove: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The member to remove.") var id: UInt64
        func run() async throws {
            var request = Crm_V1_RemoveMemberRequest()
            request.id = id
            let sent = request
            try await Members.change(options, "member \(id) is removed; stop its process") {
                try await $0.admin.removeMember(sent)
            }
        }
    }

    static func change(
        _ options: ConnectionOptions, _ done: String,
        _ call: @escaping @Sendable (MemberConnection) async throws -> Crm_V1_MembershipResponse
    ) async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let response = try await cluster.onLeader(call)
        if options.json {
            try Output.json(response.members.map(MemberJSON.init))
        } else {
            print("\(done) (log index \(response.index))")
            Output.memberTable(response.members)
        }
    }
}

extension Members.Promote {
    func change(
        _ o: ConnectionOptions, _ d: String,
        _ c: @escaping @Sendable (MemberConnection) async throws -> Crm_V1_MembershipResponse
    ) async throws { try await Members.change(o, d, c) }
}

struct Alarms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every raised alarm on every member (NOSPACE, CORRUPT). Exit status 1 while any is raised.")
    @OptionGroup var options: ConnectionOptions

    func run() async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let statuses = await cluster.statuses()
        if statuses.allSatisfy({ $0.status == nil }) { throw ExitCode(4) }
        let alarms = statuses.compactMap(\.status).flatMap(\.alarms)
        if options.json {
            try Output.json(alarms.map(AlarmJSON.init))
        } else if alarms.isEmpty {
            print("no alarms (\(statuses.compactMap(\.status).count) of \(statuses.count) members answered)")
        } else {
            Output.table(
                ["MEMBER", "ALARM", "RAISED", "REASON"],
                alarms.map { alarm in
                    let raised = Date(timeIntervalSince1970: Double(alarm.raisedAtMs) / 1000)
                    return [
                        "\(alarm.memberID)", Output.alarmName(alarm.kind), ISO8601DateFormatter().string(from: raised),
                        alarm.reason,
                    ]
                })
        }
        for (target, status, error) in statuses where status == nil {
            FileHandle.standardError.write(
                Data("crmctl: member \(target.id) did not answer: \(error ?? "unreachable")\n".utf8))
        }
        if !alarms.isEmpty { throw ExitCode(1) }
    }
}

struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Leadership.", subcommands: [Transfer.self])

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hand leadership to a caught-up voter.")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The voter to lead.") var id: UInt64
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var request = Crm_V1_TransferLeadershipRequest()
            request.targetID = id
            let sent = request
            let response = try await cluster.onLeader { try await $0.admin.transferLeadership(sent) }
            if options.json {
                try Output.json(["leader_id": response.leaderID, "term": response.term])
            } else {
                print("member \(response.leaderID) leads in term \(response.term)")
            }
        }
    }
}

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Snapshot the state machine now and compact the log up to it.")
    @OptionGroup var options: ConnectionOptions
    func run() async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let response = try await cluster.onAnyMember { try await $0.admin.snapshot(Crm_V1_SnapshotRequest()) }
        if options.json {
            try Output.json(["index": response.index, "term": response.term])
        } else {
            print("snapshot at index \(response.index) (term \(response.term)); the log before it is compacted")
        }
    }
}

struct Compact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compact the storage engine's files.")
    @OptionGroup var options: ConnectionOptions
    func run() async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let response = try await cluster.onAnyMember { try await $0.admin.compact(Crm_V1_CompactRequest()) }
        if options.json {
            try Output.json(["duration_ms": response.durationMs])
        } else {
            print("compacted in \(response.durationMs) ms")
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encryption keys.", subcommands: [Rotate.self, CRMStatus.self, CRMRotate.self])

    struct CRMStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "crm-status", abstract: "The CRM key set in use and its re-wrap job, on every member.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var statuses: [Crm_V1_CRMKeyStatusResponse] = []
            for index in cluster.targets.indices {
                statuses.append(
                    try await cluster.onTarget(index) { try await $0.admin.crmKeyStatus(Crm_V1_CRMKeyStatusRequest()) })
            }
            if options.json {
                try Output.json(statuses.map(CRMKeyJSON.init))
            } else {
                Output.table(
                    ["ID", "KEY SET", "STORED", "RE-WRAP", "PROBLEM"],
                    statuses.map {
                        [
                            "\($0.memberID)", "\($0.versionInUse)",
                            $0.storedVersions.map(String.init).joined(separator: ","),
                            $0.rewrapRunning ? "\($0.rewrapFrom) -> \($0.rewrapTo) (\($0.rewrapDone) keys done)" : "-",
                            $0.problem.isEmpty ? "-" : $0.problem,
                        ]
                    })
            }
            if statuses.contains(where: { !$0.problem.isEmpty }) { throw ExitCode(1) }
        }
    }

    struct CRMRotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "crm-rotate",
            abstract: "Put a new CRM key set in use; the leader re-wraps every subject key, then retires the old set.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let status = try await cluster.onLeader { try await $0.admin.rotateCRMKeys(Crm_V1_RotateCRMKeysRequest()) }
            if options.json {
                try Output.json(CRMKeyJSON(status))
            } else {
                print(
                    "CRM key set \(status.versionInUse) in use; re-wrapping \(status.rewrapFrom) -> \(status.rewrapTo)")
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate the data key; old values are re-sealed in the background.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let response = try await cluster.onAnyMember { try await $0.admin.rotateKeys(Crm_V1_RotateKeysRequest()) }
            if options.json {
                try Output.json(["active_key_id": [response.activeKeyID], "live_key_ids": response.liveKeyIds])
            } else {
                print("active data key \(response.activeKeyID); live keys \(response.liveKeyIds)")
            }
        }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read and verify every stored value of a member.")
    @OptionGroup var options: ConnectionOptions
    func run() async throws {
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let response = try await cluster.onAnyMember { try await $0.admin.verify(Crm_V1_VerifyRequest()) }
        if options.json {
            try Output.json(VerifyJSON(values_checked: response.valuesChecked, damaged: response.damaged.map(\.reason)))
        } else {
            print("\(response.valuesChecked) values checked, \(response.damaged.count) damaged")
            for item in response.damaged { print("  \(item.reason)") }
        }
        if !response.damaged.isEmpty { throw ExitCode(1) }
    }
}

struct CRMKeyJSON: Encodable {
    let member_id: UInt64
    let version_in_use: UInt64
    let rewrap_running: Bool
    let rewrap_from: UInt64
    let rewrap_to: UInt64
    let rewrap_done: UInt64
    let stored_versions: [UInt64]
    let problem: String

    init(_ status: Crm_V1_CRMKeyStatusResponse) {
        member_id = status.memberID
        version_in_use = status.versionInUse
        rewrap_running = status.rewrapRunning
        rewrap_from = status.rewrapFrom
        rewrap_to = status.rewrapTo
        rewrap_done = status.rewrapDone
        stored_versions = status.storedVersions
        problem = status.problem
    }
}
