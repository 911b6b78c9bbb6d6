import ArgumentParser
import CRMClient
import CRMProto
import Foundation

/// `crmctl roles`: the CRM's roles, as the signed-in user (role.admin).
struct Roles: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The CRM's roles (role.admin; signed in: crmctl login).",
        subcommands: [List.self, Show.self, Put.self, Delete.self, Explain.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            let names = try await signedIn.call(options) {
                try await $0.directory.listRoles(Crm_V1_ListRolesRequest(), metadata: $1).names
            }
            if options.json { try Output.json(names) } else { names.forEach { print($0) } }
        }
    }

    struct Show: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var name: String
        func run() async throws {
            var request = Crm_V1_GetRoleRequest()
            request.name = name
            let sent = request
            print(try await signedIn.call(options) { try await $0.directory.getRole(sent, metadata: $1).yaml })
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add or replace the role a YAML file describes (refused naming the users it would put in breach)."
        )
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The role's YAML file (- for standard input).") var file: String
        func run() async throws {
            let data =
                file == "-"
                ? FileHandle.standardInput.readData(ofLength: 64 << 10 + 1) : FileManager.default.contents(atPath: file)
            guard let data, data.count <= 64 << 10 else {
                throw ValidationError("cannot read a role of at most 64 KiB")
            }
            var request = Crm_V1_PutRoleRequest()
            request.yaml = String(decoding: data, as: UTF8.self)
            let sent = request
            let role = try await signedIn.call(options) { try await $0.directory.putRole(sent, metadata: $1) }
            print("role \(role.name) stored")
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var name: String
        func run() async throws {
            var request = Crm_V1_DeleteRoleRequest()
            request.name = name
            let sent = request
            _ = try await signedIn.call(options) { try await $0.directory.deleteRole(sent, metadata: $1) }
            print("role \(name) deleted")
        }
    }

    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Why USER may or may not do ACTION on ENTITY (and FIELD): the rule that decided.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "The user's id.") var user: String
        @Argument var entity: String
        @Argument(help: "create, read, update, delete or destroy.") var action: String
        @Option var field: String?
        @Option(help: "A record's id: whether the action reaches it (scope or share).") var record: String?
        func run() async throws {
            var request = Crm_V1_ExplainAccessRequest()
            request.recordID = record ?? ""
            request.userID = user
            request.entity = entity
            request.action = action
            request.field = field ?? ""
            let sent = request
            let answer = try await signedIn.call(options) { try await $0.directory.explainAccess(sent, metadata: $1) }
            if options.json {
                try Output.object([
                    "scope": answer.scope, "scope_reason": answer.scopeReason, "field_access": answer.fieldAccess,
                    "field_reason": answer.fieldReason, "record_reached": answer.recordReached,
                    "record_reason": answer.recordReason,
                ])
                return
            }
            print("\(action) \(entity): \(answer.scope) — \(answer.scopeReason)")
            if let field { print("field \(field): \(answer.fieldAccess) — \(answer.fieldReason)") }
            if let record {
                print("record \(record): \(answer.recordReached ? "reached" : "not reached") — \(answer.recordReason)")
            }
        }
    }
}
