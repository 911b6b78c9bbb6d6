import CRM
import CRMProto
import GRPCCore
import Identity
import KVStore

/// Teams in the directory: user administrators create, rename and retire them and put users in
/// them; any signed-in user may list them (names are configuration, not personal data).
extension DirectoryService {
    func putTeam(
        _ message: Crm_V1_PutTeamRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_TeamInfo {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.putTeam(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin)
            let user = checked.session.user
            let store = TeamStore(directory: identity.directory)
            guard !message.teamID.isEmpty else {
                guard !message.retired else { throw RecordError.badRequest("a new team is not retired") }
                let id = try CRMID.random()
                try await commit(
                    try store.create(id: id, name: message.name), caller, as: user, "team.create", records: [id],
                    reason: message.name)
                return try teamInfo(id)
            }
            let id = try RecordsProto.id(message.teamID, "team_id")
            guard let current = try store.team(id) else {
                throw RPCError(code: .notFound, message: "there is no team \(id)")
            }
            guard message.expectedVersion == current.version else {
                throw RPCError(
                    code: .aborted, message: "team \(id) is at version \(current.version); read it again and retry")
            }
            try await commit(
                try store.change(current, name: message.name, retired: message.retired), caller, as: user,
                "team.change", records: [id], reason: message.name + (message.retired ? " retired" : ""))
            return try teamInfo(id)
        }
    }

    func listTeams(
        _ message: Crm_V1_ListTeamsRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_ListTeamsResponse {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.listTeams(message, metadata: metadata)
        } lead: { caller in
            _ = try await acting(metadata, caller, needs: nil)
            var response = Crm_V1_ListTeamsResponse()
            response.teams = try TeamStore(directory: identity.directory).all().map(Self.info)
            return response
        }
    }

    func setUserTeams(
        _ message: Crm_V1_SetUserTeamsRequest, _ access: RecordsService.Call, _ metadata: Metadata
    ) async throws -> Crm_V1_UserInfo {
        try await onLeader(access, metadata) { leader, metadata in
            try await leader.setUserTeams(message, metadata: metadata)
        } lead: { caller in
            let (checked, _) = try await acting(metadata, caller, needs: .userAdmin)
            let id = try RecordsProto.id(message.userID, "user_id")
            let teams = try message.teams.map { try RecordsProto.id($0, "teams") }
            try await commit(
                try TeamStore(directory: identity.directory).assign(
                    teams, to: id, by: DirectoryChanges.owner(of: checked.session.user)), caller,
                as: checked.session.user, "user.teams", records: [id] + teams)
            return try userInfo(id)
        }
    }

    private func teamInfo(_ id: CRMID) throws -> Crm_V1_TeamInfo {
        guard let team = try TeamStore(directory: identity.directory).team(id) else {
            throw RPCError(code: .notFound, message: "there is no team \(id)")
        }
        return Self.info(team)
    }

    private static func info(_ team: Team) -> Crm_V1_TeamInfo {
        var info = Crm_V1_TeamInfo()
        info.teamID = team.id.description
        info.name = team.name
        info.retired = team.retired
        info.version = team.version
        return info
    }

    // MARK: gRPC

    func putTeam(
        request: ServerRequest<Crm_V1_PutTeamRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_TeamInfo> {
        ServerResponse(
            message: try await putTeam(request.message, try admit(request.metadata, context), request.metadata))
    }

    func listTeams(
        request: ServerRequest<Crm_V1_ListTeamsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_ListTeamsResponse> {
        ServerResponse(
            message: try await listTeams(request.message, try admit(request.metadata, context), request.metadata))
    }

    func setUserTeams(
        request: ServerRequest<Crm_V1_SetUserTeamsRequest>, context: ServerContext
    ) async throws -> ServerResponse<Crm_V1_UserInfo> {
        ServerResponse(
            message: try await setUserTeams(request.message, try admit(request.metadata, context), request.metadata))
    }
}
