import CRMProto
import Foundation
import GRPCCore
import Transport

/// Sign-in and sessions over HTTP/JSON on the front (the `crm.v1.Directory` calls, made in
/// process). Calls that act as a user send `Authorization: Bearer crm_s_…`; bodies are parsed
/// strictly, and every sign-in or session failure is the same 401.
///
///     POST /v1/auth/login      {username, password, client_address?, bind_to_address?}
///     GET  /v1/auth/me
///     POST /v1/auth/password   {current_password, new_password}
///     GET  /v1/auth/sessions
///     POST /v1/auth/logout     {session_id?}
struct FrontAuthHTTP: Sendable {
    let directory: DirectoryService

    static let prefix = "/v1/auth/"

    func handle(
        method: String, path: String, authorization: [String], clientAddress: String?, body: Data,
        identity: PeerIdentity
    ) async throws -> FrontHTTPAPI.Reply {
        let access = RecordsService.client(identity)
        var metadata = Metadata()
        for value in authorization { metadata.addString(value, forKey: "authorization") }
        if let clientAddress { metadata.addString(clientAddress, forKey: DirectoryService.addressKey) }
        switch (method, String(path.dropFirst(Self.prefix.count))) {
        case ("POST", "login"):
            let object = try FrontRecordsHTTP.object(
                body, allowed: ["username", "password", "client_address", "bind_to_address"])
            var request = Crm_V1_LoginRequest()
            request.username = try FrontRecordsHTTP.string(object["username"], "username") ?? ""
            request.password = try FrontRecordsHTTP.string(object["password"], "password") ?? ""
            request.clientAddress = try FrontRecordsHTTP.string(object["client_address"], "client_address") ?? ""
            request.bindToAddress = try FrontRecordsHTTP.bool(object["bind_to_address"], "bind_to_address") ?? false
            let response = try await directory.login(request, access, metadata)
            return try FrontRecordsHTTP.reply([
                "token": response.token, "user_id": response.userID,
                "password_change_only": response.passwordChangeOnly,
            ])
        case ("GET", "me"):
            let me = try await directory.whoAmI(Crm_V1_WhoAmIRequest(), access, metadata)
            return try FrontRecordsHTTP.reply([
                "user_id": me.userID, "username": me.username, "roles": me.roles,
                "password_change_only": me.passwordChangeOnly, "application": me.application,
            ])
        case ("POST", "password"):
            let object = try FrontRecordsHTTP.object(body, allowed: ["current_password", "new_password"])
            var request = Crm_V1_ChangePasswordRequest()
            request.currentPassword = try FrontRecordsHTTP.string(object["current_password"], "current_password") ?? ""
            request.newPassword = try FrontRecordsHTTP.string(object["new_password"], "new_password") ?? ""
            let response = try await directory.changePassword(request, access, metadata)
            return try FrontRecordsHTTP.reply(["token": response.token, "user_id": response.userID])
        case ("GET", "sessions"):
            let listed = try await directory.listSessions(Crm_V1_ListSessionsRequest(), access, metadata)
            return try FrontRecordsHTTP.reply([
                "sessions": listed.sessions.map {
                    [
                        "id": $0.id, "application": $0.application, "created_at_millis": $0.createdAtMillis,
                        "last_seen_millis": $0.lastSeenMillis, "current": $0.current,
                        "bound_to_address": $0.boundToAddress,
                    ] as [String: Any]
                }
            ])
        case ("POST", "logout"):
            let object = try FrontRecordsHTTP.object(body, allowed: ["session_id"])
            var request = Crm_V1_LogoutRequest()
            request.sessionID = try FrontRecordsHTTP.string(object["session_id"], "session_id") ?? ""
            _ = try await directory.logout(request, access, metadata)
            return try FrontRecordsHTTP.reply([String: Any]())
        default:
            throw RPCError(
                code: .notFound,
                message:
                    "no such path; the sign-in routes are POST /v1/auth/{login,password,logout}, GET /v1/auth/{me,sessions}"
            )
        }
    }
}
