import ArgumentParser
import CRMProto
import Foundation

/// `crmctl mfa enrol|confirm|step-up|recovery-codes|reset`: the signed-in user's TOTP second
/// factor (RFC 6238) and recovery codes; codes are read from standard input.
struct MFA: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mfa", abstract: "Your second factor (signed in: crmctl login).",
        subcommands: [Enrol.self, Confirm.self, StepUp.self, RecoveryCodes.self, Reset.self])

    struct Enrol: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A new TOTP secret for your authenticator (active once confirmed with a code).",
            discussion: "Replacing an active second factor needs a step-up first.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            let response = try await signedIn.call(options) {
                try await $0.directory.enrolSecondFactor(Crm_V1_EnrolSecondFactorRequest(), metadata: $1)
            }
            if options.json {
                try Output.object([
                    "secret_base32": response.secretBase32, "provisioning_uri": response.provisioningUri,
                ])
            } else {
                print("secret (type it into an authenticator app): \(response.secretBase32)")
                print("or scan this URI as a QR code: \(response.provisioningUri)")
                print("then: crmctl mfa confirm (with the app's current code on standard input)")
            }
        }
    }

    struct Confirm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Activate the enrolled secret with its current code (from standard input).",
            discussion: "Prints ten recovery codes, shown once. Your other sessions end; the token file gets a new one."
        )
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            var request = Crm_V1_ConfirmSecondFactorRequest()
            request.code = try Session.readPassword("code")
            let sent = request
            let response = try await signedIn.call(options) {
                try await $0.directory.confirmSecondFactor(sent, metadata: $1)
            }
            try Session.store(response.token, at: Session.tokenFile(signedIn.tokenFile))
            MFA.printCodes(response.recoveryCodes, json: options.json)
        }
    }

    struct StepUp: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "step-up",
            abstract: "Pass the second factor again (a code from standard input) for a sensitive change.",
            discussion: "Role changes, new recovery codes and resets need one within 10 minutes.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Flag(help: "Standard input holds a recovery code, not a TOTP code.") var recoveryCode = false
        func run() async throws {
            var request = Crm_V1_StepUpRequest()
            let code = try Session.readPassword(recoveryCode ? "recovery code" : "code")
            if recoveryCode { request.recoveryCode = code } else { request.code = code }
            let sent = request
            let response = try await signedIn.call(options) { try await $0.directory.stepUp(sent, metadata: $1) }
            try Session.store(response.token, at: Session.tokenFile(signedIn.tokenFile))
            if options.json { try Output.object(["user_id": response.userID]) } else { print("stepped up") }
        }
    }

    struct RecoveryCodes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "recovery-codes",
            abstract: "Ten new recovery codes (after a step-up); the old ones stop working.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            let response = try await signedIn.call(options) {
                try await $0.directory.regenerateRecoveryCodes(Crm_V1_RegenerateRecoveryCodesRequest(), metadata: $1)
            }
            MFA.printCodes(response.recoveryCodes, json: options.json)
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove another user's second factor (user.admin, after a step-up): their sessions end.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var userID: String
        func run() async throws {
            var request = Crm_V1_ResetSecondFactorRequest()
            request.userID = userID
            let sent = request
            let user = try await signedIn.call(options) { try await $0.directory.resetSecondFactor(sent, metadata: $1) }
            try Users.print([user], json: options.json)
        }
    }

    static func printCodes(_ codes: [String], json: Bool) {
        if json {
            try? Output.object(["recovery_codes": codes])
        } else {
            print("recovery codes (each works once; keep them apart from this device):")
            for code in codes { print("  \(code)") }
        }
    }
}
