import CRM
import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Raft

/// Users on a process cluster for tests, drills and benchmarks, made through the real API: the
/// first user bootstrapped through the admin listener, a role and principals put by that
/// security administrator, and a records user who signs in through each application. After
/// `signInRecordsUser`, the cluster's client and front connections act in that user's session.
extension ProcessCluster {
    /// The password every harness user ends up with.
    public static let harnessPassword = "harness passphrase, long enough"
    /// The role of the harness's records user: every action on every record, every field.
    public static let recordsRole = "records-all"

    /// Bootstraps `admin-harness`, puts `records-all` (see `recordsRoleYAML`) and a principal
    /// for each application in `principals` with the ceiling records-all and security-admin
    /// (operator tools on the admin list need none), creates `records-harness` with that role and signs it in through each of
    /// `clients`; their connections carry the session from then on. Answers the admin's token
    /// (acting through the operator's certificate) for tests that administer more.
    @discardableResult
    public func signInRecordsUser(
        clients: [String] = ["crmctl", "app"], principals: [String] = ["app"], seconds: Double = 30
    ) async throws -> String {
        let leader = try await requireLeader(seconds: seconds)
        var bootstrap = Crm_V1_BootstrapUserRequest()
        bootstrap.username = "admin-harness"
        bootstrap.password = Self.harnessPassword + " at first"
        // The first user makes the CRM's key set, once every member has reported that it can
        // apply transactions: until then the bootstrap is refused, and tried again.
        let deadline = ContinuousClock.now + .seconds(seconds)
        while true {
            do {
                _ = try await connection(leader, .admin).admin.bootstrapUser(bootstrap, options: Self.harnessCall)
                break
            } catch let error as RPCError
                where [.failedPrecondition, .unavailable].contains(error.code) && ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let admin = try await signIn(
            "admin-harness", first: Self.harnessPassword + " at first", through: "crmctl", leader: leader)
        let directory = try connection(leader, .client, as: "crmctl").directory
        let acting: Metadata = ["authorization": "Bearer \(admin)"]
        var role = Crm_V1_PutRoleRequest()
        role.yaml = Self.recordsRoleYAML()
        _ = try await directory.putRole(role, metadata: acting, options: Self.harnessCall)
        for name in principals {
            var put = Crm_V1_PutPrincipalRequest()
            put.principal.name = name
            put.principal.ceiling = [Self.recordsRole, "security-admin"]
            _ = try await connection(leader, .admin).admin.putPrincipal(put, options: Self.harnessCall)
        }
        var user = Crm_V1_CreateUserRequest()
        user.username = "records-harness"
        user.password = Self.harnessPassword + " at first"
        user.roles = [Self.recordsRole]
        _ = try await directory.createUser(user, metadata: acting, options: Self.harnessCall)
        var tokens: [String: String] = [:]
        for client in clients {
            let first = client == clients[0]
            tokens[client] = try await signIn(
                "records-harness", first: first ? Self.harnessPassword + " at first" : nil, through: client,
                leader: leader)
        }
        bearerTokens.withLock { $0.merge(tokens) { $1 } }
        for (client, token) in tokens {
            guard
                FileManager.default.createFile(
                    atPath: tokenFile(client), contents: Data((token + "\n").utf8),
                    attributes: [.posixPermissions: 0o600])
            else { throw HarnessError("cannot write \(tokenFile(client))") }
        }
        await closeConnections() // the next ones carry the tokens
        return admin
    }

    /// The file holding the records user's token for application `client` (for
    /// `crmctl --token-file`), written by `signInRecordsUser`.
    public func tokenFile(_ client: String = "crmctl") -> String { directory + "/token-\(client)" }

    /// Signs `username` in through application `client` and answers the token; with `first`
    /// (the password it was created with) the password is changed to `harnessPassword` first.
    public func signIn(
        _ username: String, first: String? = nil, through client: String, leader: NodeID
    ) async throws
        -> String
    {
        let directory = try connection(leader, .client, as: client).directory
        var login = Crm_V1_LoginRequest()
        login.username = username
        login.password = first ?? Self.harnessPassword
        let opened = try await directory.login(login, metadata: [:], options: Self.harnessCall)
        guard let first else { return opened.token }
        var change = Crm_V1_ChangePasswordRequest()
        change.currentPassword = first
        change.newPassword = Self.harnessPassword
        return try await directory.changePassword(
            change, metadata: ["authorization": "Bearer \(opened.token)"], options: Self.harnessCall
        ).token
    }

    /// Every object action with scope all on every entity, and edit on every personal field the
    /// entities have now (custom personal fields added later are named by putting the role again).
    public static func recordsRoleYAML(
        extraFields: [EntityCode: [String]] = [:], name: String = recordsRole
    ) -> String {
        var lines = ["name: \(name)", "objects:"]
        for entity in EntityCode.records {
            lines.append("  \(entity.name): {create: true, read: all, update: all, delete: all, destroy: all}")
        }
        lines.append("fields:")
        for entity in EntityCode.records {
            let personal =
                EntityCatalog.standard(entity).fields.filter(\.personal).map(\.name) + (extraFields[entity] ?? [])
            guard !personal.isEmpty else { continue }
            lines.append("  \(entity.name): {" + personal.map { "\($0): edit" }.joined(separator: ", ") + "}")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func requireLeader(seconds: Double) async throws -> NodeID {
        guard let leader = await waitForLeader(seconds: seconds) else {
            throw HarnessError("no leader within \(seconds) s")
        }
        return leader
    }

    static let harnessCall: CallOptions = {
        var options = CallOptions.defaults
        options.timeout = .seconds(10)
        return options
    }()
}
