import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Transport

/// Sign-in and sessions over HTTP/JSON on the front (the `crm.v1.Directory` calls, made in
/// process). Calls that act as a user send `Authorization: Bearer crm_s_…`; bodies are parsed
/// strictly, and every sign-in or session failure is the same 401.
///
///     POST /v1/auth/login      {username, password, client_address?, bind_to_address?, user_agent?,
///                               device_token?}
///     POST /v1/auth/login/second-factor   {ticket, code | recovery_code}
///     GET  /v1/auth/me
///     POST /v1/auth/mfa/enrol  {}           → {secret_base32, provisioning_uri}
///     POST /v1/auth/mfa/confirm {code}      → {token, recovery_codes}
///     POST /v1/auth/mfa/step-up {code | recovery_code} → {token}
///     POST /v1/auth/mfa/recovery-codes {}   → {recovery_codes}
///     POST /v1/auth/password   {current_password, new_password}
///     GET  /v1/auth/sessions
///     GET  /v1/auth/alerts?after=&limit=   security alerts (user.admin or audit.read), from `after` on
///     POST /v1/auth/logout     {session_id?}
struct FrontAuthHTTP: Sendable {
    let directory: DirectoryService

    static let prefix = "/v1/auth/"

    func handle(
        method: String, path: String, query: String = "", authorization: [String], clientAddress: String?, body: Data,
        identity: PeerIdentity
    ) async throws -> FrontHTTPAPI.Reply {
        let access = RecordsService.client(identity)
        var metadata = Metadata()
        for value in authorization { metadata.addString(value, forKey: "authorization") }
        if let clientAddress { metadata.addString(clientAddress, forKey: DirectoryService.addressKey) }
        switch (method, String(path.dropFirst(Self.prefix.count))) {
        case ("POST", "login"):
            let object = try FrontRecordsHTTP.object(
                body,
                allowed: ["username", "password", "client_address", "bind_to_address", "user_agent", "device_token"])
            var request = Crm_V1_LoginRequest()
            request.username = try FrontRecordsHTTP.string(object["username"], "username") ?? ""
            request.password = try FrontRecordsHTTP.string(object["password"], "password") ?? ""
            request.clientAddress = try FrontRecordsHTTP.string(object["client_address"], "client_address") ?? ""
            request.bindToAddress = try FrontRecordsHTTP.bool(object["bind_to_address"], "bind_to_address") ?? false
            request.userAgent = try FrontRecordsHTTP.string(object["user_agent"], "user_agent") ?? ""
            request.deviceToken = try FrontRecordsHTTP.string(object["device_token"], "device_token") ?? ""
            let response = try await directory.login(request, access, metadata)
            return try Self.loginReply(response)
        case ("POST", "login/second-factor"):
            let object = try FrontRecordsHTTP.object(body, allowed: ["ticket", "code", "recovery_code"])
            var request = Crm_V1_CompleteLoginRequest()
            request.ticket = try FrontRecordsHTTP.string(object["ticket"], "ticket") ?? ""
            request.code = try FrontRecordsHTTP.string(object["code"], "code") ?? ""
            request.recoveryCode = try FrontRecordsHTTP.string(object["recovery_code"], "recovery_code") ?? ""
            return try Self.loginReply(try await directory.completeLogin(request, access, metadata))
        case ("POST", "mfa/enrol"):
            _ = try FrontRecordsHTTP.object(body, allowed: [])
            let response = try await directory.enrolSecondFactor(Crm_V1_EnrolSecondFactorRequest(), access, metadata)
            return try FrontRecordsHTTP.reply([
                "secret_base32": response.secretBase32, "provisioning_uri": response.provisioningUri,
            ])
        case ("POST", "mfa/confirm"):
            let object = try FrontRecordsHTTP.object(body, allowed: ["code"])
            var request = Crm_V1_ConfirmSecondFactorRequest()
            request.code = try FrontRecordsHTTP.string(object["code"], "code") ?? ""
            let response = try await directory.confirmSecondFactor(request, access, metadata)
            return try FrontRecordsHTTP.reply(["token": response.token, "recovery_codes": response.recoveryCodes])
        case ("POST", "mfa/step-up"):
            let object = try FrontRecordsHTTP.object(body, allowed: ["code", "recovery_code"])
            var request = Crm_V1_StepUpRequest()
            request.code = try FrontRecordsHTTP.string(object["code"], "code") ?? ""
            request.recoveryCode = try FrontRecordsHTTP.string(object["recovery_code"], "recovery_code") ?? ""
            return try Self.loginReply(try await directory.stepUp(request, access, metadata))
        case ("POST", "mfa/recovery-codes"):
            _ = try FrontRecordsHTTP.object(body, allowed: [])
            let response = try await directory.regenerateRecoveryCodes(
                Crm_V1_RegenerateRecoveryCodesRequest(), access, metadata)
            return try FrontRecordsHTTP.reply(["recovery_codes": response.recoveryCodes])
        case ("GET", "me"):
            let me = try await directory.whoAmI(Crm_V1_WhoAmIRequest(), access, metadata)
            return try FrontRecordsHTTP.reply([
                "user_id": me.userID, "username": me.username, "roles": me.roles,
                "password_change_only": me.passwordChangeOnly, "application": me.application,
                "enrolment_only": me.enrolmentOnly, "second_factor_enrolled": me.secondFactorEnrolled,
                "second_factor_at_millis": me.secondFactorAtMillis, "recovery_codes_left": me.recoveryCodesLeft,
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
        case ("GET", "alerts"):
            let parameters = try FrontRecordsHTTP.parameters(query)
            var request = Crm_V1_ListAlertsRequest()
            request.after = parameters.values["after"] ?? ""
            request.limit = try parameters.limit(1_000)
            let listed = try await directory.listAlerts(request, access, metadata)
            return try FrontRecordsHTTP.reply(["alerts": listed.alerts.map(RecordJSON.object)])
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
                    "no such path; the sign-in routes are POST /v1/auth/{login,login/second-factor,password,logout,"
                    + "mfa/enrol,mfa/confirm,mfa/step-up,mfa/recovery-codes}, GET /v1/auth/{me,sessions,alerts}"
            )
        }
    }

    static func loginReply(_ response: Crm_V1_LoginResponse) throws -> FrontHTTPAPI.Reply {
        try FrontRecordsHTTP.reply([
            "token": response.token, "user_id": response.userID,
            "password_change_only": response.passwordChangeOnly,
            "second_factor_required": response.secondFactorRequired, "enrolment_only": response.enrolmentOnly,
            "device_token": response.deviceToken,
        ])
    }
}
