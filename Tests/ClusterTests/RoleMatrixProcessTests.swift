import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Every role template × entity × action, over gRPC and over the front's HTTP/JSON, on a real
/// member: each cell asserted against a table written out by hand, for a record the user owns,
/// one of their team's and one of someone else's. A user with no role is denied everything.
extension RealProcessTests {
    @Suite struct RoleMatrixProcessTests {
        /// What each template grants: per entity, create read update delete destroy, each `-`
        /// (none), `y` (create allowed), `o` own, `t` team or `a` all.
        static let expected: [String: [String: String]] = [
            "security-admin": [:], "auditor": [:], "no-role": [:],
            "privacy-officer": [
                "person": "- a - - -", "company": "- a - - -", "deal": "- a - - -", "activity": "- a - - -",
            ],
            "sales-manager": [
                "person": "y a t t -", "company": "y a t t -", "deal": "y a t t -", "activity": "y t t t -",
            ],
            "sales-rep": ["person": "y t o o -", "company": "y a o - -", "deal": "y t o o -", "activity": "y o o o -"],
            "analyst": ["person": "- a - - -", "company": "- a - - -", "deal": "- a - - -"],
            "integration-readonly": [
                "person": "- a - - -", "company": "- a - - -", "deal": "- a - - -", "activity": "- a - - -",
            ],
        ]
        static let entities = ["person", "company", "deal", "activity"]
        static let actions = ["create", "read", "update", "delete", "destroy"]
        /// A non-personal field of each entity every role with create or update may edit.
        static let plainField = ["person": "source", "company": "industry", "deal": "name", "activity": "status"]
        static let plainValues = [
            "person": ("fair", "web"), "company": ("retail", "energy"), "deal": ("d-1", "d-2"),
            "activity": ("open", "done"),
        ]

        enum Outcome: String { case ok, denied, notFound, other }
        enum Kind: String, CaseIterable { case own, team, other }

        struct World {
            let cluster: ProcessCluster
            let team: String
            /// Per template: the user's token through crmctl (gRPC) and through app (HTTP).
            var grpcTokens: [String: String] = [:]
            var httpTokens: [String: String] = [:]
            let adminToken: String
        }

        static func value(_ entity: String, second: Bool = false) -> Crm_V1_FieldValue {
            let pair = plainValues[entity]!
            return .with { $0.text = second ? pair.1 : pair.0 }
        }

        /// A cluster of one member with a user per template (a copy of the template without its
        /// conditions, named `m-<template>`) and one without roles, all in one team.
        static func world() async throws -> World {
            let cluster = try ProcessCluster(ids: [1])
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let directory = try cluster.connection(leader, .client).directory
            let acting: Metadata = ["authorization": "Bearer \(admin)"]
            let team = try await Self.team("matrix", try cluster.connection(leader, .client), acting)
            var world = World(cluster: cluster, team: team, adminToken: admin)
            for template in expected.keys.sorted() {
                var roles: [String] = []
                if template != "no-role" {
                    var get = Crm_V1_GetRoleRequest()
                    get.name = template
                    let yaml = try await directory.getRole(get, metadata: acting, options: ProcessCluster.shortCall)
                        .yaml
                    var put = Crm_V1_PutRoleRequest()
                    put.yaml = yaml.split(separator: "\n", omittingEmptySubsequences: false)
                        .filter { !$0.hasPrefix("conditions:") }
                        .map { $0 == "name: \(template)" ? "name: m-\(template)" : String($0) }.joined(separator: "\n")
                    _ = try await directory.putRole(put, metadata: acting, options: ProcessCluster.shortCall)
                    roles = ["m-\(template)"]
                }
                var user = Crm_V1_CreateUserRequest()
                user.username = "matrix-\(template)"
                user.password = "first passphrase of \(template)"
                user.roles = roles
                user.teams = [team]
                _ = try await directory.createUser(user, metadata: acting, options: ProcessCluster.shortCall)
                world.grpcTokens[template] = try await cluster.signIn(
                    user.username, first: user.password, through: "crmctl", leader: leader)
                world.httpTokens[template] = try await cluster.signIn(user.username, through: "app", leader: leader)
            }
            return world
        }

        /// A new team's id.
        static func team(
            _ name: String, _ member: MemberConnection, _ acting: Metadata
        ) async throws -> String {
            var put = Crm_V1_PutTeamRequest()
            put.name = name
            return try await member.directory.putTeam(put, metadata: acting, options: ProcessCluster.shortCall).teamID
        }

        static func outcome(_ call: () async throws -> Void) async -> (Outcome, String) {
            do {
                try await call()
                return (.ok, "")
            } catch let error as RPCError where error.code == .permissionDenied {
                return (.denied, error.message)
            } catch let error as RPCError where error.code == .notFound {
                return (.notFound, error.message)
            } catch {
                return (.other, "\(error)")
            }
        }

        static func outcome(_ response: HTTPSRequest.Response) -> Outcome {
            switch response.status {
            case 200, 201: return .ok
            case 403: return .denied
            case 404: return .notFound
            default: return .other
            }
        }

        /// What the table says `action` of `template` does to a record of `kind`.
        static func expectation(_ template: String, _ entity: String, _ action: String, _ kind: Kind?) -> Outcome {
            let row = (expected[template]?[entity] ?? "- - - - -").split(separator: " ")
            let grant = row[actions.firstIndex(of: action)!]
            guard grant != "-" else { return .denied }
            guard let kind else { return .ok } // create
            switch (grant, kind) {
            case ("a", _), ("t", .own), ("t", .team), ("o", .own): return .ok
            default: return .notFound
            }
        }

        /// A record of `kind` for `template`'s user: made by that user (own), or by the records
        /// user with the team or without (nil when the user cannot create one of their own).
        static func record(
            _ world: World, _ template: String, _ entity: String, _ kind: Kind
        ) async throws -> Crm_V1_Record? {
            var create = Crm_V1_CreateRecordRequest()
            create.entity = entity
            create.fields = [plainField[entity]!: value(entity)]
            let records = try world.cluster.connection(1, .client).records
            switch kind {
            case .own:
                guard expectation(template, entity, "create", nil) == .ok else { return nil }
                return try await records.create(
                    create, metadata: ["authorization": "Bearer \(world.grpcTokens[template]!)"],
                    options: ProcessCluster.shortCall
                ).record
            case .team:
                create.teams = [world.team]
                return try await records.create(create, options: ProcessCluster.shortCall).record
            case .other:
                return try await records.create(create, options: ProcessCluster.shortCall).record
            }
        }

        @Test func everyTemplateEntityAndActionOverGRPCAndHTTP() async throws {
            let world = try await Self.world()
            let cluster = world.cluster
            var cells = 0
            var checks = 0
            let records = try cluster.connection(1, .client).records
            for template in Self.expected.keys.sorted() {
                let grpc: Metadata = ["authorization": "Bearer \(world.grpcTokens[template]!)"]
                let http = [("Authorization", "Bearer \(world.httpTokens[template]!)")]
                for entity in Self.entities {
                    for action in Self.actions {
                        cells += 2
                        if action == "create" {
                            var create = Crm_V1_CreateRecordRequest()
                            create.entity = entity
                            create.fields = [Self.plainField[entity]!: Self.value(entity)]
                            let (got, why) = await Self.outcome {
                                _ = try await records.create(create, metadata: grpc, options: ProcessCluster.shortCall)
                            }
                            let want = Self.expectation(template, entity, action, nil)
                            #expect(got == want, "gRPC \(template) create \(entity): \(got) \(why)")
                            let body =
                                #"{"fields": {"\#(Self.plainField[entity]!)": "\#(Self.plainValues[entity]!.0)"}}"#
                            let answer = try await cluster.frontHTTP(
                                1, "POST", "/v1/records/\(entity)", json: body, headers: http)
                            #expect(Self.outcome(answer) == want, "HTTP \(template) create \(entity): \(answer.text)")
                            checks += 2
                            continue
                        }
                        for kind in Kind.allCases {
                            let want = Self.expectation(template, entity, action, kind)
                            if let record = try await Self.record(world, template, entity, kind) {
                                let (got, why) = await Self.outcome {
                                    try await Self.grpcCall(records, action, entity, record, grpc)
                                }
                                #expect(got == want, "gRPC \(template) \(action) \(entity) (\(kind)): \(got) \(why)")
                                checks += 1
                            }
                            if let record = try await Self.record(world, template, entity, kind) {
                                let answer = try await Self.httpCall(cluster, action, entity, record, http)
                                #expect(
                                    Self.outcome(answer) == want,
                                    "HTTP \(template) \(action) \(entity) (\(kind)): \(answer.status) \(answer.text)")
                                checks += 1
                            }
                        }
                    }
                }
            }
            #expect(cells == Self.expected.count * Self.entities.count * Self.actions.count * 2)

            // The templates as shipped: those that ask for a second factor refuse every call
            // until the session has one (second factors come with the audit work).
            let directory = try cluster.connection(1, .client).directory
            for template in ["privacy-officer", "sales-manager"] {
                var user = Crm_V1_CreateUserRequest()
                user.username = "shipped-\(template)"
                user.password = "first passphrase of \(template)"
                user.roles = [template]
                _ = try await directory.createUser(
                    user, metadata: ["authorization": "Bearer \(world.adminToken)"], options: ProcessCluster.shortCall)
                let token = try await cluster.signIn(user.username, first: user.password, through: "crmctl", leader: 1)
                let other = try #require(try await Self.record(world, template, "person", .other))
                let (got, why) = await Self.outcome {
                    try await Self.grpcCall(records, "read", "person", other, ["authorization": "Bearer \(token)"])
                }
                #expect(got == .denied && why.contains("second factor"), "\(template): \(got) \(why)")
            }
            print(
                "role matrix: \(Self.expected.count) users (7 templates and no role) × 4 entities × 5 actions × 2 APIs = \(cells) cells, \(checks) checks"
            )
        }

        static func text(_ value: String) -> Crm_V1_FieldValue { .with { $0.text = value } }
        static func texts(_ values: [String]) -> Crm_V1_FieldValue { .with { $0.texts = .with { $0.items = values } } }

        /// Record scope, shares and field rules, as users of the templates meet them.
        @Test func scopeSharesAndFieldRules() async throws {
            let world = try await Self.world()
            let cluster = world.cluster
            let records = try cluster.connection(1, .client).records
            let directory = try cluster.connection(1, .client).directory
            let adminMetadata: Metadata = ["authorization": "Bearer \(world.adminToken)"]
            let otherTeam = try await Self.team("other", try cluster.connection(1, .client), adminMetadata)
            func user(_ name: String, _ team: String) async throws -> (id: String, metadata: Metadata) {
                var user = Crm_V1_CreateUserRequest()
                user.username = name
                user.password = "first passphrase for a new rep"
                user.roles = ["m-sales-rep"]
                user.teams = [team]
                let info = try await directory.createUser(
                    user, metadata: ["authorization": "Bearer \(world.adminToken)"], options: ProcessCluster.shortCall)
                let token = try await cluster.signIn(name, first: user.password, through: "crmctl", leader: 1)
                return (info.userID, ["authorization": "Bearer \(token)"])
            }
            let a: Metadata = ["authorization": "Bearer \(world.grpcTokens["sales-rep"]!)"]
            let b = try await user("rep-b", otherTeam)
            let d = try await user("rep-d", world.team)
            let analyst: Metadata = ["authorization": "Bearer \(world.grpcTokens["analyst"]!)"]

            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = [
                "first_name": Self.text("Ada"), "last_name": Self.text("Lovelace"),
                "emails": Self.texts(["ada@scope.example"]), "job_title": Self.text("Analyst"),
                "source": Self.text("fair"),
            ]
            let p1 = try await records.create(create, metadata: a, options: ProcessCluster.shortCall).record
            create.teams = [world.team]
            let p2 = try await records.create(create, metadata: a, options: ProcessCluster.shortCall).record
            func get(_ id: String, _ metadata: Metadata, fields: [String] = []) async -> (Outcome, String) {
                await Self.outcome {
                    var get = Crm_V1_GetRecordRequest()
                    get.entity = "person"
                    get.id = id
                    get.fields = fields
                    _ = try await records.get(get, metadata: metadata, options: ProcessCluster.shortCall)
                }
            }
            func update(
                _ id: String, _ metadata: Metadata, _ set: [String: Crm_V1_FieldValue]
            ) async -> (Outcome, String) {
                await Self.outcome {
                    var get = Crm_V1_GetRecordRequest()
                    get.entity = "person"
                    get.id = id
                    let current = try await records.get(get, options: ProcessCluster.shortCall).record
                    var update = Crm_V1_UpdateRecordRequest()
                    update.entity = "person"
                    update.id = id
                    update.expectedVersion = current.version
                    update.set = set
                    _ = try await records.update(update, metadata: metadata, options: ProcessCluster.shortCall)
                }
            }

            // Out of scope is NOT_FOUND, worded as for an id that does not exist.
            let random = String(repeating: "5a", count: 16)
            let (outOfScope, scopeMessage) = await get(p1.id, b.metadata)
            let (missing, missingMessage) = await get(random, b.metadata)
            #expect(outOfScope == .notFound && missing == .notFound)
            #expect(scopeMessage == "no person \(p1.id)" && missingMessage == "no person \(random)")
            #expect(await update(p1.id, b.metadata, ["source": Self.text("x")]).0 == .notFound)
            var list = Crm_V1_ListRecordsRequest()
            list.entity = "person"
            list.pageSize = 500
            let listed = try await records.list(list, metadata: b.metadata, options: ProcessCluster.shortCall)
            #expect(!listed.records.contains { $0.id == p1.id || $0.id == p2.id })
            var lookup = Crm_V1_LookupRequest()
            lookup.entity = "person"
            lookup.by = "email"
            lookup.value = "ada@scope.example"
            #expect(
                try await records.lookup(lookup, metadata: b.metadata, options: ProcessCluster.shortCall).records
                    .isEmpty)
            #expect(try await records.lookup(lookup, metadata: a, options: ProcessCluster.shortCall).records.count == 2)

            // Team scope: a teammate reads the team's record, not the other, and updates neither.
            #expect(await get(p2.id, d.metadata).0 == .ok)
            #expect(await get(p1.id, d.metadata).0 == .notFound)
            #expect(await update(p2.id, d.metadata, ["source": Self.text("x")]).0 == .notFound)

            // A share widens one record for its grantee, read or edit, until it ends.
            func share(
                _ grantee: (user: String?, team: String?), _ access: String, _ metadata: Metadata
            ) async -> Outcome {
                await Self.outcome {
                    var share = Crm_V1_ShareRequest()
                    share.entity = "person"
                    share.id = p1.id
                    share.userID = grantee.user ?? ""
                    share.teamID = grantee.team ?? ""
                    share.access = access
                    _ = try await records.share(share, metadata: metadata, options: ProcessCluster.shortCall)
                }.0
            }
            #expect(await share((b.id, nil), "read", a) == .ok)
            #expect(await get(p1.id, b.metadata).0 == .ok)
            #expect(await get(p2.id, b.metadata).0 == .notFound, "one record only")
            #expect(await update(p1.id, b.metadata, ["source": Self.text("x")]).0 == .notFound, "a read share")
            #expect(await share((b.id, nil), "edit", a) == .ok)
            #expect(await update(p1.id, b.metadata, ["source": Self.text("shared edit")]).0 == .ok)
            #expect(await share((b.id, nil), "none", a) == .ok)
            #expect(await get(p1.id, b.metadata).0 == .notFound, "the share ended")
            #expect(await share((nil, otherTeam), "read", a) == .ok)
            #expect(await get(p1.id, b.metadata).0 == .ok, "shared with b's team")
            #expect(await share((b.id, nil), "edit", b.metadata) == .notFound, "only who may update it shares it")
            // explain names what decided for one record.
            func explain(
                _ user: String, _ action: String, _ record: String
            ) async throws -> Crm_V1_ExplainAccessResponse {
                var request = Crm_V1_ExplainAccessRequest()
                request.userID = user
                request.entity = "person"
                request.action = action
                request.recordID = record
                return try await directory.explainAccess(
                    request, metadata: ["authorization": "Bearer \(world.adminToken)"],
                    options: ProcessCluster.shortCall)
            }
            let viaTeamShare = try await explain(b.id, "read", p1.id)
            #expect(viaTeamShare.recordReached && viaTeamShare.recordReason.contains("shared with the user's team"))
            let teammateUpdate = try await explain(d.id, "update", p2.id)
            #expect(!teammateUpdate.recordReached && teammateUpdate.recordReason.contains("outside scope own"))
            let teammateRead = try await explain(d.id, "read", p2.id)
            #expect(teammateRead.recordReached && teammateRead.recordReason.contains("team"), "\(teammateRead)")
            var shares = Crm_V1_ListSharesRequest()
            shares.entity = "person"
            shares.id = p1.id
            let listedShares = try await records.listShares(shares, metadata: a, options: ProcessCluster.shortCall)
            #expect(listedShares.shares.map { "\($0.teamID) \($0.access)" } == ["\(otherTeam) read"])

            // Moving b into the matrix team ends b's sessions; signed in again, b reaches the
            // team's record and, through the team share, no longer p1.
            var move = Crm_V1_SetUserTeamsRequest()
            move.userID = b.id
            move.teams = [world.team]
            let moved = try await directory.setUserTeams(
                move, metadata: adminMetadata, options: ProcessCluster.shortCall)
            #expect(moved.teams == [world.team])
            await #expect(throws: RPCError.self) {
                do { _ = try await directory.whoAmI(Crm_V1_WhoAmIRequest(), metadata: b.metadata) } catch let error
                    as RPCError
                {
                    #expect(error.code == .unauthenticated)
                    throw error
                }
            }
            let bAgain: Metadata = [
                "authorization": "Bearer \(try await cluster.signIn("rep-b", through: "crmctl", leader: 1))"
            ]
            #expect(await get(p2.id, bAgain).0 == .ok)
            #expect(await get(p1.id, bAgain).0 == .notFound)
            let (ownMove, ownWhy) = await Self.outcome {
                _ = try await directory.setUserTeams(move, metadata: bAgain, options: ProcessCluster.shortCall)
            }
            #expect(ownMove == .denied && ownWhy.contains("user.admin"), "\(ownWhy)")

            // Fields: the analyst reads persons without their personal fields, cannot look up by
            // one, and does not see them described.
            var read = Crm_V1_GetRecordRequest()
            read.entity = "person"
            read.id = p1.id
            let seen = try await records.get(read, metadata: analyst, options: ProcessCluster.shortCall).record
            #expect(seen.fields.keys.sorted() == ["source"], "\(seen.fields.keys.sorted())")
            let (hiddenAsked, hiddenWhy) = await Self.outcome {
                var asked = read
                asked.fields = ["first_name"]
                _ = try await records.get(asked, metadata: analyst, options: ProcessCluster.shortCall)
            }
            #expect(hiddenAsked == .other && hiddenWhy.contains("no field `first_name`"), "\(hiddenWhy)")
            let analystList = try await records.list(list, metadata: analyst, options: ProcessCluster.shortCall)
            #expect(!analystList.records.isEmpty && analystList.records.allSatisfy { $0.fields["first_name"] == nil })
            let (lookedUp, lookupWhy) = await Self.outcome {
                _ = try await records.lookup(lookup, metadata: analyst, options: ProcessCluster.shortCall)
            }
            #expect(lookedUp == .denied && lookupWhy.contains("emails"), "\(lookupWhy)")
            var describe = Crm_V1_DescribeRequest()
            describe.entity = "person"
            let described = try await records.describe(describe, metadata: analyst, options: ProcessCluster.shortCall)
            #expect(!described.fields.contains { $0.personal } && described.fields.contains { $0.name == "source" })
            let analystHTTP = [("Authorization", "Bearer \(world.httpTokens["analyst"]!)")]
            let describedHTTP = try await cluster.frontHTTP(
                1, "GET", "/v1/records/person:describe", headers: analystHTTP)
            #expect(describedHTTP.status == 200 && !describedHTTP.text.contains("first_name"), "\(describedHTTP.text)")
            let lookupHTTP = try await cluster.frontHTTP(
                1, "POST", "/v1/records/person:lookup", json: #"{"by": "email", "value": "ada@scope.example"}"#,
                headers: analystHTTP)
            #expect(lookupHTTP.status == 403, "\(lookupHTTP.text)")

            // The sales rep sees the fields the role names, not the others; a write with a
            // read-only field is refused whole, naming it, and writes nothing.
            let own = try await records.get(read, metadata: a, options: ProcessCluster.shortCall).record
            #expect(own.fields["emails"] != nil && own.fields["city"] == nil && own.fields["address"] == nil)
            let (refused, refusedWhy) = await update(
                p1.id, a, ["last_name": Self.text("Byron"), "phones": Self.texts(["+14155550100"])])
            #expect(refused == .denied && refusedWhy.contains("person.phones"), "\(refusedWhy)")
            let after = try await records.get(read, metadata: a, options: ProcessCluster.shortCall).record
            #expect(after.version == own.version && after.fields["last_name"]?.text == "Lovelace")
            let patched = try await cluster.frontHTTP(
                1, "PATCH", "/v1/records/person/\(p1.id)", json: #"{"set": {"phones": ["+14155550100"]}}"#,
                headers: [
                    ("Authorization", "Bearer \(world.httpTokens["sales-rep"]!)"), ("If-Match", "\"\(own.version)\""),
                ])
            #expect(patched.status == 403 && patched.text.contains("person.phones"), "\(patched.text)")
        }

        /// A role edited between a write's check and its commit: the write was pinned to the
        /// role's version, so it fails, is checked again, and is refused; nothing is written.
        @Test func aPermissionChangeBetweenCheckAndCommitAbortsTheWrite() async throws {
            let cluster = try ProcessCluster(ids: [1])
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let admin = try await cluster.signInRecordsUser()
            let records = try cluster.connection(1, .client).records
            var create = Crm_V1_CreateRecordRequest()
            create.entity = "person"
            create.fields = ["source": Self.text("before")]
            let person = try await records.create(create, options: ProcessCluster.shortCall).record
            try cluster.setFault(1, \.checkToCommitDelayMilliseconds, 1500)
            #expect(await eventually(seconds: 5) { cluster.tookFaults(1) })
            let write = Task {
                await Self.outcome {
                    var update = Crm_V1_UpdateRecordRequest()
                    update.entity = "person"
                    update.id = person.id
                    update.expectedVersion = person.version
                    update.set = ["source": Self.text("after")]
                    var options = CallOptions.defaults
                    options.timeout = .seconds(15)
                    _ = try await records.update(update, options: options)
                }
            }
            try await Task.sleep(for: .milliseconds(400))
            var role = Crm_V1_PutRoleRequest()
            role.yaml = ProcessCluster.recordsRoleYAML().replacingOccurrences(
                of: "person: {create: true, read: all, update: all,",
                with: "person: {create: true, read: all, update: none,")
            _ = try await cluster.connection(1, .client).directory.putRole(
                role, metadata: ["authorization": "Bearer \(admin)"], options: ProcessCluster.shortCall)
            let (outcome, why) = await write.value
            #expect(outcome == .denied && why.contains("update on person"), "\(outcome) \(why)")
            try cluster.clearFaults(1)
            var get = Crm_V1_GetRecordRequest()
            get.entity = "person"
            get.id = person.id
            let after = try await records.get(get, options: ProcessCluster.shortCall).record
            #expect(after.version == person.version && after.fields["source"]?.text == "before")
        }

        static func grpcCall(
            _ records: Crm_V1_Records.Client<some ClientTransport>, _ action: String, _ entity: String,
            _ record: Crm_V1_Record, _ metadata: Metadata
        ) async throws {
            switch action {
            case "read":
                var get = Crm_V1_GetRecordRequest()
                get.entity = entity
                get.id = record.id
                _ = try await records.get(get, metadata: metadata, options: ProcessCluster.shortCall)
            case "update":
                var update = Crm_V1_UpdateRecordRequest()
                update.entity = entity
                update.id = record.id
                update.expectedVersion = record.version
                update.set = [plainField[entity]!: value(entity, second: true)]
                _ = try await records.update(update, metadata: metadata, options: ProcessCluster.shortCall)
            default:
                var versioned = Crm_V1_VersionedRecordRequest()
                versioned.entity = entity
                versioned.id = record.id
                versioned.expectedVersion = record.version
                if action == "delete" {
                    _ = try await records.delete(versioned, metadata: metadata, options: ProcessCluster.shortCall)
                } else {
                    _ = try await records.destroy(versioned, metadata: metadata, options: ProcessCluster.shortCall)
                }
            }
        }

        static func httpCall(
            _ cluster: ProcessCluster, _ action: String, _ entity: String, _ record: Crm_V1_Record,
            _ headers: [(String, String)]
        ) async throws -> HTTPSRequest.Response {
            let path = "/v1/records/\(entity)/\(record.id)"
            let versioned = headers + [("If-Match", "\"\(record.version)\"")]
            switch action {
            case "read": return try await cluster.frontHTTP(1, "GET", path, headers: headers)
            case "update":
                let body = #"{"set": {"\#(plainField[entity]!)": "\#(plainValues[entity]!.1)"}}"#
                return try await cluster.frontHTTP(1, "PATCH", path, json: body, headers: versioned)
            case "delete": return try await cluster.frontHTTP(1, "DELETE", path, headers: versioned)
            default: return try await cluster.frontHTTP(1, "DELETE", path + "?destroy=true", headers: versioned)
            }
        }
    }
}
