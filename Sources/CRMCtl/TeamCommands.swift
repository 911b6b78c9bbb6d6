import ArgumentParser
import CRMClient
import CRMProto
import GRPCCore

/// `crmctl teams list|create|rename|retire|restore`: the teams users and records belong to.
/// A team is named by its name or its id wherever one is asked for.
struct Teams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The teams users and records belong to (changes need user.admin).",
        subcommands: [List.self, Create.self, Rename.self, Retire.self, Restore.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every team, retired ones included.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws { try Teams.print(try await Teams.all(options, signedIn), json: options.json) }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A new team.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "Its name: a-z, 0-9, '-' and '_', a letter first.") var name: String
        func run() async throws {
            var request = Crm_V1_PutTeamRequest()
            request.name = name
            try await Teams.put(request, options, signedIn)
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a team another name.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The team's name or id.") var team: String
        @Argument(help: "The new name.") var name: String
        func run() async throws { try await Teams.change(team, options, signedIn) { $0.name = name } }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retire a team: its members and records stay, nobody and nothing joins it any more.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The team's name or id.") var team: String
        func run() async throws { try await Teams.change(team, options, signedIn) { $0.retired = true } }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bring a retired team back.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The team's name or id.") var team: String
        func run() async throws { try await Teams.change(team, options, signedIn) { $0.retired = false } }
    }

    static func all(_ options: ConnectionOptions, _ signedIn: SignedIn) async throws -> [Crm_V1_TeamInfo] {
        try await signedIn.call(options) {
            try await $0.directory.listTeams(Crm_V1_ListTeamsRequest(), metadata: $1).teams
        }
    }

    /// The ids of `names` (each a team's name or id), in order.
    static func ids(_ names: [String], _ options: ConnectionOptions, _ signedIn: SignedIn) async throws -> [String] {
        guard !names.isEmpty else { return [] }
        let teams = try await all(options, signedIn)
        return try names.map { name in
            guard let team = teams.first(where: { $0.name == name || $0.teamID == name }) else {
                throw ValidationError("there is no team \(name)")
            }
            return team.teamID
        }
    }

    static func change(
        _ name: String, _ options: ConnectionOptions, _ signedIn: SignedIn,
        _ edit: (inout Crm_V1_PutTeamRequest) -> Void
    ) async throws {
        guard let team = try await all(options, signedIn).first(where: { $0.name == name || $0.teamID == name }) else {
            throw ValidationError("there is no team \(name)")
        }
        var request = Crm_V1_PutTeamRequest()
        request.teamID = team.teamID
        request.name = team.name
        request.retired = team.retired
        request.expectedVersion = team.version
        edit(&request)
        try await put(request, options, signedIn)
    }

    static func put(_ request: Crm_V1_PutTeamRequest, _ options: ConnectionOptions, _ signedIn: SignedIn) async throws {
        let team = try await signedIn.call(options) { try await $0.directory.putTeam(request, metadata: $1) }
        try print([team], json: options.json)
    }

    static func print(_ teams: [Crm_V1_TeamInfo], json: Bool) throws {
        if json {
            try Output.json(teams.map { TeamJSON(team_id: $0.teamID, name: $0.name, retired: $0.retired) })
            return
        }
        Output.table(
            ["ID", "NAME", "STATE"], teams.map { [$0.teamID, $0.name, $0.retired ? "retired" : "active"] })
    }

    struct TeamJSON: Encodable {
        let team_id: String
        let name: String
        let retired: Bool
    }
}
