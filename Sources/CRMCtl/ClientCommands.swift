import ArgumentParser
import CRMClient
import CRMProto
import Foundation

/// `crmctl clients`: applications (client certificates) and what users may do through them.
struct Clients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Applications' principal records: role ceiling, address assertion, expiry, blocking.",
        subcommands: [List.self, Put.self, Block.self, Unblock.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let principals = try await cluster.onAnyMember {
                try await $0.admin.listPrincipals(Crm_V1_ListPrincipalsRequest()).principals
            }
            try Clients.print(principals, json: options.json)
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add or replace an application's principal (its certificate names crm://client/NAME).")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The client name.") var name: String
        @Option(help: "A role of the ceiling (repeat for more).") var ceiling: [String] = []
        @Flag(help: "The application may assert its end users' addresses.") var mayAssertAddress = false
        @Option(help: "Refused after this many days (none when not given).") var expiresInDays: UInt64?
        func run() async throws {
            var principal = Crm_V1_PrincipalInfo()
            principal.name = name
            principal.ceiling = ceiling
            principal.mayAssertAddress = mayAssertAddress
            if let days = expiresInDays {
                guard days >= 1, days <= 3650 else { throw ValidationError("--expires-in-days is 1 to 3650") }
                principal.expiresAtMillis = UInt64(Date().timeIntervalSince1970 * 1000) + days * 86_400_000
            }
            var request = Crm_V1_PutPrincipalRequest()
            request.principal = principal
            let sent = request
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let stored = try await cluster.onLeader { try await $0.admin.putPrincipal(sent) }
            try Clients.print([stored], json: options.json)
        }
    }

    struct Block: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument var name: String
        func run() async throws { try await Clients.setBlocked(name, true, options) }
    }

    struct Unblock: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument var name: String
        func run() async throws { try await Clients.setBlocked(name, false, options) }
    }

    static func setBlocked(_ name: String, _ blocked: Bool, _ options: ConnectionOptions) async throws {
        var request = Crm_V1_SetPrincipalBlockedRequest()
        request.name = name
        request.blocked = blocked
        let sent = request
        let cluster = try Cluster(options)
        defer { cluster.close() }
        let stored = try await cluster.onLeader { try await $0.admin.setPrincipalBlocked(sent) }
        try print([stored], json: options.json)
    }

    static func print(_ principals: [Crm_V1_PrincipalInfo], json: Bool) throws {
        if json {
            try Output.json(
                principals.map {
                    PrincipalJSON(
                        name: $0.name, ceiling: $0.ceiling, may_assert_address: $0.mayAssertAddress,
                        expires_at_millis: $0.expiresAtMillis, blocked: $0.blocked, last_used_millis: $0.lastUsedMillis)
                })
            return
        }
        Output.table(
            ["CLIENT", "CEILING", "ASSERTS ADDRESS", "EXPIRES", "BLOCKED", "LAST USED"],
            principals.map {
                [
                    $0.name, $0.ceiling.joined(separator: ","), $0.mayAssertAddress ? "yes" : "no",
                    $0.expiresAtMillis == 0 ? "-" : Clients.time($0.expiresAtMillis), $0.blocked ? "yes" : "no",
                    $0.lastUsedMillis == 0 ? "-" : Clients.time($0.lastUsedMillis),
                ]
            })
    }

    static func time(_ millis: UInt64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }

    struct PrincipalJSON: Encodable {
        let name: String
        let ceiling: [String]
        let may_assert_address: Bool
        let expires_at_millis: UInt64
        let blocked: Bool
        let last_used_millis: UInt64
    }
}
