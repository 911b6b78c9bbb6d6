import ArgumentParser
import CRMClient
import CRMProto
import Foundation

/// `crmctl records`: read CRM records through any member's records API, as the signed-in user
/// (`crmctl login`) through the application the client certificate names. Personal values given to a lookup are read from standard input
/// with `-`, so that they stay out of the process list and the shell history.
struct Records: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read CRM records (get, list, lookup, history, describe) and add or retire custom fields.",
        subcommands: [
            Get.self, List.self, Lookup.self, History.self, Describe.self, PutField.self, RetireField.self, Share.self,
            Shares.self,
        ])

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A record's field history, newest first (history.read): old and new values, who, when.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "person, company, deal or activity.") var entity: String
        @Argument(help: "The record's id.") var id: String
        @Option(help: "At most this many changes (1 to 1000).") var limit: UInt32 = 100
        func run() async throws {
            var request = Crm_V1_HistoryRequest()
            request.entity = entity
            request.id = id
            request.limit = limit
            let sent = request
            let items = try await Records.call(options, signedIn) { try await $0.records.history(sent).items }
            func text(_ value: Crm_V1_FieldValue, _ present: Bool) -> String {
                guard present, let data = try? RecordJSON.data(RecordJSON.value(value)) else { return "-" }
                return String(decoding: data, as: UTF8.self)
            }
            var rows: [[String]] = []
            for item in items {
                let time = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(item.timeMs) / 1000))
                for change in item.changes {
                    rows.append([
                        time, item.actor, change.field, text(change.oldValue, change.hasOldValue),
                        text(change.newValue, change.hasNewValue),
                    ])
                }
            }
            if options.json {
                try Output.object(
                    rows.map { ["time": $0[0], "actor": $0[1], "field": $0[2], "old": $0[3], "new": $0[4]] })
            } else {
                Output.table(["TIME", "ACTOR", "FIELD", "OLD", "NEW"], rows)
            }
        }
    }

    struct Get: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument(help: "person, company, deal or activity.") var entity: String
        @Argument(help: "The record's id (32 hexadecimal characters).") var id: String
        @Option(help: "Only these fields, comma-separated.") var fields: String?
        func run() async throws {
            var request = Crm_V1_GetRecordRequest()
            request.entity = entity
            request.id = id
            request.fields = fields.map { $0.split(separator: ",").map(String.init) } ?? []
            let sent = request
            let record = try await Records.call(options, signedIn) { try await $0.records.get(sent).record }
            try Records.print([record], json: options.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List records by an index: all, updated, owner, team, due, trash, company, stage, status, "
                + "assignee, target, contact (one page; --page-token continues, --all-pages reads on).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Option(help: "The index.") var by = "all"
        @Option(help: "The index's value (an id, a stage or status, an owner; `me` for yourself).") var value: String?
        @Option(help: "Records per page (1 to 500).") var pageSize: UInt32 = 50
        @Option(help: "Continue a list from its last page's token.") var pageToken: String?
        @Flag(help: "Read every page (up to 100).") var allPages = false
        @Flag(help: "Include records in the trash.") var includeDeleted = false
        func run() async throws {
            var request = Crm_V1_ListRecordsRequest()
            request.entity = entity
            request.by = by
            request.value = value ?? ""
            request.pageSize = pageSize
            request.pageToken = pageToken ?? ""
            request.includeDeleted = includeDeleted
            var records: [Crm_V1_Record] = []
            var next = ""
            for _ in 0..<(allPages ? 100 : 1) {
                let sent = request
                let page = try await Records.call(options, signedIn) { try await $0.records.list(sent) }
                records += page.records
                next = page.nextPageToken
                guard !next.isEmpty else { break }
                request.pageToken = next
            }
            if options.json {
                try Output.object(["records": records.map(RecordJSON.object), "next_page_token": next])
            } else {
                try Records.print(records, json: false)
                if !next.isEmpty { Swift.print("next page: --page-token \(next)") }
            }
        }
    }

    struct Lookup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Find records by an exact e-mail, phone, name or domain.",
            discussion: "Give `-` as the value to read it from standard input (keeps it out of the process list).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Option(help: "email, phone, name or domain.") var by: String
        @Argument(help: "The value, or - to read it from standard input.") var value: String
        @Flag(help: "Include records in the trash.") var includeDeleted = false
        func run() async throws {
            var request = Crm_V1_LookupRequest()
            request.entity = entity
            request.by = by
            request.value =
                value == "-"
                ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                    .trimmingCharacters(in: .newlines)
                : value
            request.includeDeleted = includeDeleted
            let sent = request
            let records = try await Records.call(options, signedIn) { try await $0.records.lookup(sent).records }
            try Records.print(records, json: options.json)
            if records.isEmpty { throw ExitCode(3) }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "An entity's fields: type, personal, how found.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        func run() async throws {
            var request = Crm_V1_DescribeRequest()
            request.entity = entity
            let sent = request
            let described = try await Records.call(options, signedIn) { try await $0.records.describe(sent) }
            if options.json {
                try Output.object(RecordJSON.object(described))
                return
            }
            Records.print(described)
        }
    }

    struct PutField: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a custom field to an entity, or widen one (longer, more items, wider range, more choices).",
            discussion: "A field's type and whether it is personal never change; retire it and add another instead.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Argument(help: "1 to 48 characters: a-z first, then a-z, 0-9 or _.") var name: String
        @Option(
            help:
                "text, texts, emails, phones, integer, money, date, timestamp, boolean, choice, reference, references.")
        var type: String
        @Flag(help: "Personal data: sealed under the data subject's key, never filtered on.") var personal = false
        @Option(help: "Why the field is kept (a purpose id); needed for a personal field.") var purpose: String?
        @Option(help: "text: bytes; texts: bytes per item.") var maxBytes: UInt32?
        @Option(help: "texts, emails, phones, references: items.") var maxItems: UInt32?
        @Option(help: "integer: the smallest value.") var min: Int64?
        @Option(help: "integer: the largest value.") var max: Int64?
        @Option(help: "choice: the values, comma-separated.") var choices: String?
        @Option(help: "reference, references: the entity referred to.") var target: String?
        @Flag(help: "Keep the field's changes in each record's history (given again with every widening, or it stops).")
        var trackHistory = false
        func run() async throws {
            var request = Crm_V1_PutFieldRequest()
            request.entity = entity
            request.name = name
            request.type = type
            request.personal = personal
            request.purpose = purpose ?? ""
            request.maxBytes = maxBytes ?? 0
            request.maxItems = maxItems ?? 0
            if let min { request.min = min }
            if let max { request.max = max }
            request.choices = choices.map { $0.split(separator: ",").map(String.init) } ?? []
            request.targetEntity = target ?? ""
            request.trackHistory = trackHistory
            let sent = request
            let described = try await Records.call(options, signedIn) { try await $0.records.putField(sent) }
            try options.json ? Output.object(RecordJSON.object(described)) : Records.print(described)
        }
    }

    struct RetireField: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Take a custom field out of use: refused in writes, absent from reads; its name is not used again.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Argument var name: String
        func run() async throws {
            var request = Crm_V1_RetireFieldRequest()
            request.entity = entity
            request.name = name
            let sent = request
            let described = try await Records.call(options, signedIn) { try await $0.records.retireField(sent) }
            try options.json ? Output.object(RecordJSON.object(described)) : Records.print(described)
        }
    }

    static func print(_ described: Crm_V1_DescribeResponse) {
        Output.table(
            ["FIELD", "TYPE", "PERSONAL", "PURPOSE", "LOOKUP", "INDEX", "CUSTOM", "HISTORY"],
            described.fields.map {
                [
                    $0.name, $0.type, $0.personal ? "yes" : "no", $0.purpose, $0.lookup, $0.index,
                    $0.custom ? "yes" : "", $0.tracked ? "yes" : "",
                ]
            })
    }

    /// Runs `body` on any member as the signed-in user (their token file; none before the first
    /// user is bootstrapped, when the store is in set-up mode).
    static func call<T: Sendable>(
        _ options: ConnectionOptions, _ signedIn: SignedIn,
        _ body: @escaping @Sendable (MemberConnection) async throws -> T
    ) async throws -> T {
        let cluster = try Cluster(options, api: .client, bearerToken: try signedIn.tokenIfSignedIn())
        defer { cluster.close() }
        return try await cluster.onAnyMember(body)
    }

    struct Share: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Share one record with a user or a team (read, edit), or end a share (none).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Argument var id: String
        @Option(help: "The user's id.") var user: String?
        @Option(help: "The team's id.") var team: String?
        @Option(help: "read, edit or none.") var access: String
        func run() async throws {
            var request = Crm_V1_ShareRequest()
            request.entity = entity
            request.id = id
            request.userID = user ?? ""
            request.teamID = team ?? ""
            request.access = access
            let sent = request
            try Records.printShares(
                try await Records.call(options, signedIn) { try await $0.records.share(sent) }, options)
        }
    }

    struct Shares: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The users and teams a record is shared with.")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        @Argument var entity: String
        @Argument var id: String
        func run() async throws {
            var request = Crm_V1_ListSharesRequest()
            request.entity = entity
            request.id = id
            let sent = request
            try Records.printShares(
                try await Records.call(options, signedIn) { try await $0.records.listShares(sent) }, options)
        }
    }

    static func printShares(_ response: Crm_V1_SharesResponse, _ options: ConnectionOptions) throws {
        if options.json {
            try Output.object([
                "shares": response.shares.map {
                    ["user_id": $0.userID, "team_id": $0.teamID, "access": $0.access]
                }
            ])
            return
        }
        for share in response.shares {
            Swift.print(
                share.userID.isEmpty ? "team \(share.teamID): \(share.access)" : "user \(share.userID): \(share.access)"
            )
        }
    }

    static func print(_ records: [Crm_V1_Record], json: Bool) throws {
        if json {
            try Output.object(records.count == 1 ? RecordJSON.object(records[0]) : records.map(RecordJSON.object))
            return
        }
        for record in records {
            Swift.print(
                "\(record.entity) \(record.id) version \(record.version)\(record.deleted ? " (in the trash)" : "")")
            for (name, value) in record.fields.sorted(by: { $0.key < $1.key }) {
                let rendered = (try? RecordJSON.data(RecordJSON.value(value))).map {
                    String(decoding: $0, as: UTF8.self)
                }
                Swift.print("  \(name): \(rendered ?? "?")")
            }
        }
    }
}

/// `crmctl crm check`: the CRM state's consistency on every member.
struct CRMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm", abstract: "The CRM's state.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every index entry matches its record, every person has its subject key, nothing dangles; "
                + "on every member (exit 1 on any problem).")
        @OptionGroup var options: ConnectionOptions
        @OptionGroup var signedIn: SignedIn
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var reports: [[String: Any]] = []
            var problems = 0
            for index in cluster.targets.indices {
                let target = cluster.targets[index]
                let response = try await cluster.onTarget(index) {
                    try await $0.admin.crmCheck(Crm_V1_CRMCheckRequest())
                }
                problems += response.problems.count
                reports.append([
                    "member_id": target.id, "applied_index": response.appliedIndex, "records": response.records,
                    "index_entries": response.indexEntries, "subject_keys": response.subjectKeys,
                    "problems": response.problems,
                ])
                if !options.json {
                    Swift.print(
                        "member \(target.id) at index \(response.appliedIndex): \(response.records) records, "
                            + "\(response.indexEntries) index entries, \(response.subjectKeys) subject keys, "
                            + "\(response.problems.count) problems")
                    for problem in response.problems { Swift.print("  \(problem)") }
                }
            }
            if options.json { try Output.object(["members": reports, "problems": problems]) }
            if problems > 0 { throw ExitCode(1) }
        }
    }
}
