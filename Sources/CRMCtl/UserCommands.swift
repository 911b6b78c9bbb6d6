import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// `crmctl users bootstrap`, `crmctl login`, `crmctl whoami`, `crmctl logout`: the CRM's users
/// and sessions. Passwords are read from standard input (never from arguments, which the
/// process list shows); the session token is kept in a file only its owner may read.
struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The CRM's users (signed in: crmctl login).",
        subcommands: [
            Bootstrap.self, Create.self, List.self, Disable.self, Enable.self, Unlock.self, AssignRoles.self,
            SetTeams.self,
        ])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user (user.admin); the initial password is read from standard input and must be changed.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var username: String
        @Option(help: "A role (repeat for more).") var role: [String] = []
        @Option(help: "A team's name or id (repeat for more).") var team: [String] = []
        @Option var displayName: String?
        @Option var email: String?
        @Flag(help: "Read a password hash imported from another system (passlib, Django) instead of a password.")
        var importHash = false
        func run() async throws {
            var request = Crm_V1_CreateUserRequest()
            request.username = username
            if importHash {
                request.importedPasswordHash = try Session.readPassword("imported password hash for \(username)")
            } else {
                request.password = try Session.readPassword("initial password for \(username)")
            }
            request.roles = role
            request.teams = try await Teams.ids(team, options, signedIn)
            request.displayName = displayName ?? ""
            request.email = email ?? ""
            let sent = request
            let user = try await signedIn.call(options) { try await $0.directory.createUser(sent, metadata: $1) }
            try Users.print([user], json: options.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every user (user.admin).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            let users = try await signedIn.call(options) {
                try await $0.directory.listUsers(Crm_V1_ListUsersRequest(), metadata: $1).users
            }
            try Users.print(users, json: options.json)
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user (user.admin): their sessions end.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        func run() async throws { try await Users.setStatus(user, "disabled", options, signedIn) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled user (user.admin).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        func run() async throws { try await Users.setStatus(user, "active", options, signedIn) }
    }

    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a user's failed sign-ins: ends a lock and any back-off (user.admin; not yourself).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        func run() async throws {
            var request = Crm_V1_UnlockUserRequest()
            request.userID = user
            let sent = request
            let updated = try await signedIn.call(options) { try await $0.directory.unlockUser(sent, metadata: $1) }
            try Users.print([updated], json: options.json)
        }
    }

    struct AssignRoles: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "assign-roles", abstract: "Give a user exactly these roles (role.admin): their sessions end.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        @Argument(help: "The roles.") var roles: [String] = []
        func run() async throws {
            var request = Crm_V1_AssignRolesRequest()
            request.userID = user
            request.roles = roles
            let sent = request
            let updated = try await signedIn.call(options) { try await $0.directory.assignRoles(sent, metadata: $1) }
            try Users.print([updated], json: options.json)
        }
    }

    struct SetTeams: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-teams",
            abstract: "Put a user in exactly these teams (user.admin; none: no team): their sessions end.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        @Argument(help: "The teams' names or ids.") var teams: [String] = []
        func run() async throws {
            var request = Crm_V1_SetUserTeamsRequest()
            request.userID = user
            request.teams = try await Teams.ids(teams, options, signedIn)
            let sent = request
            let updated = try await signedIn.call(options) { try await $0.directory.setUserTeams(sent, metadata: $1) }
            try Users.print([updated], json: options.json)
        }
    }

    static func setStatus(
        _ user: String, _ status: String, _ options: ConnectionOptions, _ signedIn: SignedIn
    )
        async throws
    {
        var request = Crm_V1_SetUserStatusRequest()
        request.userID = user
        request.status = status
        let sent = request
        let updated = try await signedIn.call(options) { try await $0.directory.setUserStatus(sent, metadata: $1) }
        try print([updated], json: options.json)
    }

    static func print(_ users: [Crm_V1_UserInfo], json: Bool) throws {
        if json {
            try Output.json(
                users.map {
                    UserJSON(
                        user_id: $0.userID, username: $0.username, status: $0.status, roles: $0.roles, teams: $0.teams,
                        locked: $0.locked, reads_stopped: $0.readsStopped)
                })
            return
        }
        Output.table(
            ["ID", "USERNAME", "STATUS", "ROLES", "TEAMS", "LOCKED", "READS"],
            users.map {
                [
                    $0.userID, $0.username, $0.status, $0.roles.joined(separator: ","), $0.teams.joined(separator: ","),
                    $0.locked ? "yes" : "", $0.readsStopped ? "stopped" : "",
                ]
            })
    }

    struct UserJSON: Encodable {
        let user_id: String
        let username: String
        let status: String
        let roles: [String]
        let teams: [String]
        let locked: Bool
        let reads_stopped: Bool
    }

    struct Bootstrap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Create the CRM's first user, a security administrator (once; the password is read from standard input).",
            discussion: "The user must change the password at the first sign-in (crmctl login, then crmctl password).")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The username.") var username: String
        func run() async throws {
            var request = Crm_V1_BootstrapUserRequest()
            request.username = username
            request.password = try Session.readPassword("password for \(username)")
            let sent = request
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let response = try await cluster.onLeader { try await $0.admin.bootstrapUser(sent) }
            if options.json {
                try Output.object(["user_id": response.userID])
            } else {
                Swift.print("user \(username) created (\(response.userID)); change the password at the first sign-in")
            }
        }
    }
}

/// The token of the signed-in user, for the commands that act as them.
struct SignedIn: ParsableArguments {
    @Option(help: "The token file (default: $CRM_TOKEN_FILE or ~/.crm-token).") var tokenFile: String?

    func call<T: Sendable>(
        _ options: ConnectionOptions, _ body: @escaping @Sendable (MemberConnection, Metadata) async throws -> T
    ) async throws -> T {
        let metadata = Session.metadata(try Session.load(Session.tokenFile(tokenFile)))
        let cluster = try Cluster(options, api: .client)
        defer { cluster.close() }
        return try await cluster.onAnyMember { try await body($0, metadata) }
    }

    /// The stored token, or nil when there is no token file.
    func tokenIfSignedIn() throws -> String? {
        let path = Session.tokenFile(tokenFile)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try Session.load(path)
    }
}

/// Signing in and out; the token file (`--token-file`, `$CRM_TOKEN_FILE` or `~/.crm-token`).
struct Session {
    static func tokenFile(_ given: String?) -> String {
        given ?? ProcessInfo.processInfo.environment["CRM_TOKEN_FILE"]
            ?? (NSHomeDirectory() + "/.crm-token")
    }

    /// The first line of standard input (at most 1 KiB).
    static func readPassword(_ what: String) throws -> String {
        if isatty(STDIN_FILENO) == 1 { FileHandle.standardError.write(Data("\(what): ".utf8)) }
        let data = FileHandle.standardInput.readData(ofLength: 1025)
        guard data.count <= 1024 else { throw ValidationError("the \(what) is longer than 1 KiB") }
        return String(decoding: data, as: UTF8.self).components(separatedBy: "\n")[0]
    }

    /// Up to `count` lines of standard input (at most 1 KiB each); on a terminal, only the
    /// first is read now (the caller asks for the rest when it needs them).
    static func readLines(_ what: String, count: Int) throws -> [String] {
        if isatty(STDIN_FILENO) == 1 { return [try readPassword(what)] }
        let data = FileHandle.standardInput.readDataToEndOfFile().prefix(1025 * count)
        let lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n").prefix(count)
        guard lines.allSatisfy({ $0.utf8.count <= 1024 }) else { throw ValidationError("a line is longer than 1 KiB") }
        // The first line always (an empty password is the server's to refuse); later ones when given.
        return [lines.first ?? ""] + lines.dropFirst().filter { !$0.isEmpty }
    }

    /// Writes `token` to `path` with mode 0600, replacing any earlier one atomically.
    static func store(_ token: String, at path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        guard
            FileManager.default.createFile(
                atPath: temporary, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else { throw ValidationError("cannot write the token file \(temporary)") }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw ValidationError("cannot write the token file \(path)")
        }
    }

    /// The stored token, refused when others may read the file.
    static func load(_ path: String) throws -> String {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let data = FileManager.default.contents(atPath: path)
        else { throw ValidationError("not signed in: no token file \(path); run crmctl login") }
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o777
        guard mode & 0o077 == 0 else {
            throw ValidationError("the token file \(path) may be read by others; chmod 600 it")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func metadata(_ token: String) -> Metadata { ["authorization": "Bearer \(token)"] }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Sign in: the password, then (for a user with a second factor) the code, a line each on standard input.",
        discussion: "The token is kept in a 0600 file. With --recovery-code the second line is a recovery code.")
    @OptionGroup var options: ConnectionOptions
    @Argument(help: "The username.") var username: String
    @Option(help: "Where to keep the token (default: $CRM_TOKEN_FILE or ~/.crm-token).") var tokenFile: String?
    @Flag(help: "The second line is a recovery code, not a TOTP code.") var recoveryCode = false
    func run() async throws {
        var request = Crm_V1_LoginRequest()
        request.username = username
        var lines = try Session.readLines("password for \(username)", count: 2)
        request.password = lines.removeFirst()
        let sent = request
        let cluster = try Cluster(options, api: .client)
        defer { cluster.close() }
        var response = try await cluster.onAnyMember { try await $0.directory.login(sent) }
        if response.secondFactorRequired {
            var complete = Crm_V1_CompleteLoginRequest()
            complete.ticket = response.token
            let code = try lines.first ?? Session.readPassword(recoveryCode ? "recovery code" : "code")
            if recoveryCode { complete.recoveryCode = code } else { complete.code = code }
            let completing = complete
            response = try await cluster.onAnyMember { try await $0.directory.completeLogin(completing) }
        }
        let path = Session.tokenFile(tokenFile)
        try Session.store(response.token, at: path)
        if options.json {
            try Output.object([
                "user_id": response.userID, "password_change_only": response.passwordChangeOnly,
                "enrolment_only": response.enrolmentOnly,
            ])
        } else {
            print("signed in as \(username); token kept in \(path)")
            if response.passwordChangeOnly {
                print("the password must be changed before anything else: crmctl password")
            } else if response.enrolmentOnly {
                print("a second factor must be enrolled before anything else: crmctl mfa enrol")
            }
        }
    }
}

struct Password: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change your password: the current one, then the new one, a line each on standard input.",
        discussion: "Every session of yours ends; the token file gets the new session's token.")
    @OptionGroup var options: ConnectionOptions
    @Option(help: "The token file (default: $CRM_TOKEN_FILE or ~/.crm-token).") var tokenFile: String?
    func run() async throws {
        let path = Session.tokenFile(tokenFile)
        let token = try Session.load(path)
        if isatty(STDIN_FILENO) == 1 {
            FileHandle.standardError.write(Data("current password, then new password:\n".utf8))
        }
        let data = FileHandle.standardInput.readData(ofLength: 2050)
        let lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        guard lines.count >= 2 else { throw ValidationError("give the current and the new password, a line each") }
        var request = Crm_V1_ChangePasswordRequest()
        request.currentPassword = lines[0]
        request.newPassword = lines[1]
        let sent = request
        let cluster = try Cluster(options, api: .client)
        defer { cluster.close() }
        let response = try await cluster.onAnyMember {
            try await $0.directory.changePassword(sent, metadata: Session.metadata(token))
        }
        try Session.store(response.token, at: path)
        print("password changed; every other session of yours has ended")
    }
}

struct WhoAmI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "whoami", abstract: "The signed-in user.")
    @OptionGroup var options: ConnectionOptions
    @Option(help: "The token file (default: $CRM_TOKEN_FILE or ~/.crm-token).") var tokenFile: String?
    func run() async throws {
        let token = try Session.load(Session.tokenFile(tokenFile))
        let cluster = try Cluster(options, api: .client)
        defer { cluster.close() }
        let me = try await cluster.onAnyMember {
            try await $0.directory.whoAmI(Crm_V1_WhoAmIRequest(), metadata: Session.metadata(token))
        }
        if options.json {
            try Output.object([
                "user_id": me.userID, "username": me.username, "roles": me.roles,
                "password_change_only": me.passwordChangeOnly, "application": me.application,
                "enrolment_only": me.enrolmentOnly, "second_factor_enrolled": me.secondFactorEnrolled,
                "second_factor_at_millis": me.secondFactorAtMillis, "recovery_codes_left": me.recoveryCodesLeft,
            ])
        } else {
            print(
                "\(me.username) (\(me.userID)), roles: \(me.roles.joined(separator: ", ")), through \(me.application)")
            if me.passwordChangeOnly { print("the password must be changed before anything else: crmctl password") }
            if me.enrolmentOnly { print("a second factor must be enrolled before anything else: crmctl mfa enrol") }
            if me.secondFactorEnrolled { print("second factor enrolled; \(me.recoveryCodesLeft) recovery codes left") }
        }
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "End this session and remove the token file.")
    @OptionGroup var options: ConnectionOptions
    @Option(help: "The token file (default: $CRM_TOKEN_FILE or ~/.crm-token).") var tokenFile: String?
    func run() async throws {
        let path = Session.tokenFile(tokenFile)
        let token = try Session.load(path)
        let cluster = try Cluster(options, api: .client)
        defer { cluster.close() }
        _ = try await cluster.onAnyMember {
            try await $0.directory.logout(Crm_V1_LogoutRequest(), metadata: Session.metadata(token))
        }
        try? FileManager.default.removeItem(atPath: path)
        print("signed out")
    }
}
