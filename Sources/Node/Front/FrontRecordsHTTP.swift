import CRM
import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Transport

/// The records API over HTTP/JSON on the front (the same calls as `crm.v1.Records`, made in
/// process). Bodies are parsed strictly (`StrictJSON`) and typed by each field's definition;
/// members a client may not set (id, version, owner, subject, times) are refused by name.
/// Personal values travel only in bodies, never in paths or query strings.
///
///     POST   /v1/records/{entity}                {fields, teams?, request_id?}   201 + ETag
///     GET    /v1/records/{entity}/{id}?fields=a,b&consistency=serializable       ETag
///     PATCH  /v1/records/{entity}/{id}           {set?, clear?} + If-Match        412 stale, 428 none
///     DELETE /v1/records/{entity}/{id}[?destroy=true] + If-Match                 trash (or destroy)
///     POST   /v1/records/{entity}/{id}:undelete  + If-Match
///     POST   /v1/records/{entity}/{id}:link      {target: {entity, id}} + If-Match (also :unlink)
///     POST   /v1/records/{entity}/{id}:share     {user_id | team_id, access: read|edit|none}
///     GET    /v1/records/{entity}/{id}:shares
///     GET    /v1/records/{entity}/{id}:history?limit=&consistency=              newest first
///     GET    /v1/records/{entity}?by=&value=&page_size=&page_token=&include_deleted=&fields=
///     POST   /v1/records/{entity}:list           {by?, value?, filters?, page_size?, page_token?, fields?}
///     POST   /v1/records/{entity}:lookup         {by, value, include_deleted?}
///     POST   /v1/records/{entity}:batchGet       {ids, fields?}
///     GET    /v1/records/{entity}:describe
///     POST   /v1/records/{entity}:putField       {name, type, personal?, purpose?, track_history?, ...}
///     POST   /v1/records/{entity}:retireField    {name}
struct FrontRecordsHTTP: Sendable {
    let records: RecordsService

    static let prefix = "/v1/records/"

    func handle(
        method: String, path: String, query: String, ifMatch: String?, authorization: [String] = [],
        clientAddress: String? = nil, body: Data, identity: PeerIdentity
    ) async throws -> FrontHTTPAPI.Reply {
        let access = RecordsService.client(identity, authorization: authorization, clientAddress: clientAddress)
        let rest = String(path.dropFirst(Self.prefix.count))
        let segments = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(segments.count), segments.allSatisfy({ !$0.isEmpty }) else { throw Self.noSuchPath }
        let (last, verb) = Self.splitVerb(segments.last!)
        let entityName = segments.count == 1 ? last : segments[0]
        let entity = try RecordsProto.entity(entityName)
        let parameters = try Self.parameters(query)
        if segments.count == 1 {
            switch (method, verb) {
            case ("POST", nil): return try await create(entity, body, access)
            case ("GET", nil): return try await list(parameters.listRequest(entityName), access)
            case ("POST", "list"):
                return try await list(try await listRequest(entity, try Self.object(body)), access)
            case ("POST", "putField"):
                let described = try await records.putField(try Self.putFieldRequest(entityName, body), access)
                return try Self.reply(RecordJSON.object(described))
            case ("POST", "retireField"):
                let object = try Self.object(body, allowed: ["name"])
                var request = Crm_V1_RetireFieldRequest()
                request.entity = entityName
                request.name = try Self.string(object["name"], "name") ?? ""
                return try Self.reply(RecordJSON.object(try await records.retireField(request, access)))
            case ("POST", "lookup"): return try await lookup(entityName, try Self.object(body), access)
            case ("POST", "batchGet"): return try await batchGet(entityName, try Self.object(body), access)
            case ("GET", "describe"):
                var request = Crm_V1_DescribeRequest()
                request.entity = entityName
                return try Self.reply(RecordJSON.object(try await records.describe(request, access)))
            default: throw Self.methodNotAllowed(method, path)
            }
        }
        let id = last
        switch (method, verb) {
        case ("GET", nil):
            var request = Crm_V1_GetRecordRequest()
            request.entity = entityName
            request.id = id
            request.fields = parameters.fields
            request.serializable = try parameters.serializable()
            return try Self.recordReply(try await records.get(request, access).record)
        case ("PATCH", nil):
            let object = try Self.object(body, allowed: ["set", "clear"])
            var request = Crm_V1_UpdateRecordRequest()
            request.entity = entityName
            request.id = id
            request.expectedVersion = try Self.expectedVersion(ifMatch)
            request.set = try Self.fields(object["set"], try await definition(entity, object["set"]), "set")
            request.clear = try Self.strings(object["clear"], "clear")
            return try await Self.versioned { try Self.recordReply(try await records.update(request, access).record) }
        case ("DELETE", nil):
            var request = Crm_V1_VersionedRecordRequest()
            request.entity = entityName
            request.id = id
            request.expectedVersion = try Self.expectedVersion(ifMatch)
            if try parameters.flag("destroy") {
                _ = try await Self.versioned { try await records.destroy(request, access) }
                return try Self.reply(["destroyed": true])
            }
            return try await Self.versioned { try Self.recordReply(try await records.delete(request, access).record) }
        case ("POST", "undelete"):
            var request = Crm_V1_VersionedRecordRequest()
            request.entity = entityName
            request.id = id
            request.expectedVersion = try Self.expectedVersion(ifMatch)
            return try await Self.versioned {
                try Self.recordReply(try await records.undelete(request, access).record)
            }
        case ("POST", "link"), ("POST", "unlink"):
            let object = try Self.object(body, allowed: ["target"])
            var request = Crm_V1_LinkRequest()
            request.entity = entityName
            request.id = id
            request.expectedVersion = try Self.expectedVersion(ifMatch)
            guard case .object(let target)? = object["target"], case .string(let targetEntity)? = target["entity"],
                case .string(let targetID)? = target["id"], target.count == 2
            else { throw Self.invalid("`target` is {\"entity\": ..., \"id\": ...}") }
            request.target = .with {
                $0.entity = targetEntity
                $0.id = targetID
            }
            return try await Self.versioned {
                try Self.recordReply(
                    verb == "link"
                        ? try await records.link(request, access).record
                        : try await records.unlink(request, access).record)
            }
        case ("POST", "share"):
            let object = try Self.object(body, allowed: ["user_id", "team_id", "access"])
            var request = Crm_V1_ShareRequest()
            request.entity = entityName
            request.id = id
            request.userID = try Self.string(object["user_id"], "user_id") ?? ""
            request.teamID = try Self.string(object["team_id"], "team_id") ?? ""
            request.access = try Self.string(object["access"], "access") ?? ""
            return try Self.sharesReply(try await records.share(request, access))
        case ("GET", "history"):
            var request = Crm_V1_HistoryRequest()
            request.entity = entityName
            request.id = id
            request.limit = try parameters.limit(FieldHistory.maxRead)
            request.serializable = try parameters.serializable()
            return try Self.reply(RecordJSON.object(try await records.history(request, access)))
        case ("GET", "shares"):
            var request = Crm_V1_ListSharesRequest()
            request.entity = entityName
            request.id = id
            return try Self.sharesReply(try await records.listShares(request, access))
        default: throw Self.methodNotAllowed(method, path)
        }
    }

    static func sharesReply(_ response: Crm_V1_SharesResponse) throws -> FrontHTTPAPI.Reply {
        try reply([
            "shares": response.shares.map { share -> [String: Any] in
                var shown: [String: Any] = ["access": share.access]
                if !share.userID.isEmpty { shown["user_id"] = share.userID }
                if !share.teamID.isEmpty { shown["team_id"] = share.teamID }
                return shown
            }
        ])
    }

    // MARK: Calls

    /// The entity's definition, knowing every field the JSON object `fields` names.
    private func definition(_ entity: EntityCode, _ fields: JSONValue?) async throws -> EntityDefinition {
        guard case .object(let members)? = fields else { return try await records.definition(entity) }
        return try await records.definition(entity, knowing: Array(members.keys.prefix(CRMLimits.fields + 1)))
    }

    private func create(
        _ entity: EntityCode, _ body: Data, _ access: RecordsService.Call
    ) async throws
        -> FrontHTTPAPI.Reply
    {
        let object = try Self.object(body, allowed: ["fields", "teams", "request_id"])
        var request = Crm_V1_CreateRecordRequest()
        request.entity = entity.name
        request.fields = try Self.fields(object["fields"], try await definition(entity, object["fields"]), "fields")
        request.teams = try Self.strings(object["teams"], "teams")
        request.requestID = try Self.string(object["request_id"], "request_id") ?? ""
        var reply = try Self.recordReply(try await records.create(request, access).record)
        reply.status = 201
        return reply
    }

    private func list(
        _ request: Crm_V1_ListRecordsRequest, _ access: RecordsService.Call
    )
        async throws -> FrontHTTPAPI.Reply
    {
        let response = try await records.list(request, access)
        return try Self.reply([
            "records": response.records.map(RecordJSON.object), "next_page_token": response.nextPageToken,
        ])
    }

    private func listRequest(
        _ entity: EntityCode, _ object: [String: JSONValue]
    ) async throws
        -> Crm_V1_ListRecordsRequest
    {
        try Self.refuseUnknown(
            object,
            allowed: ["by", "value", "filters", "page_size", "page_token", "fields", "include_deleted", "consistency"])
        var request = Crm_V1_ListRecordsRequest()
        request.entity = entity.name
        request.by = try Self.string(object["by"], "by") ?? ""
        request.value = try Self.string(object["value"], "value") ?? ""
        request.filters = try Self.fields(
            object["filters"], try await definition(entity, object["filters"]), "filters")
        request.pageSize = UInt32(try Self.integer(object["page_size"], "page_size", 0...500) ?? 0)
        request.pageToken = try Self.string(object["page_token"], "page_token") ?? ""
        request.fields = try Self.strings(object["fields"], "fields")
        request.includeDeleted = try Self.bool(object["include_deleted"], "include_deleted") ?? false
        request.serializable = try Self.serializable(try Self.string(object["consistency"], "consistency"))
        return request
    }

    private func lookup(
        _ entity: String, _ object: [String: JSONValue], _ access: RecordsService.Call
    ) async throws
        -> FrontHTTPAPI.Reply
    {
        try Self.refuseUnknown(object, allowed: ["by", "value", "include_deleted", "consistency"])
        var request = Crm_V1_LookupRequest()
        request.entity = entity
        request.by = try Self.string(object["by"], "by") ?? ""
        request.value = try Self.string(object["value"], "value") ?? ""
        request.includeDeleted = try Self.bool(object["include_deleted"], "include_deleted") ?? false
        request.serializable = try Self.serializable(try Self.string(object["consistency"], "consistency"))
        let found = try await records.lookup(request, access)
        return try Self.reply(["records": found.records.map(RecordJSON.object)])
    }

    private func batchGet(
        _ entity: String, _ object: [String: JSONValue], _ access: RecordsService.Call
    ) async throws
        -> FrontHTTPAPI.Reply
    {
        try Self.refuseUnknown(object, allowed: ["ids", "fields", "consistency"])
        var request = Crm_V1_BatchGetRecordsRequest()
        request.entity = entity
        request.ids = try Self.strings(object["ids"], "ids")
        request.fields = try Self.strings(object["fields"], "fields")
        request.serializable = try Self.serializable(try Self.string(object["consistency"], "consistency"))
        let response = try await records.batchGet(request, access)
        return try Self.reply(["records": response.records.map(RecordJSON.object), "missing": response.missing])
    }

    /// A `PutField` request from its JSON body.
    static func putFieldRequest(_ entity: String, _ body: Data) throws -> Crm_V1_PutFieldRequest {
        let object = try Self.object(
            body,
            allowed: [
                "name", "type", "personal", "purpose", "max_bytes", "max_items", "min", "max", "choices",
                "target_entity", "track_history",
            ])
        var request = Crm_V1_PutFieldRequest()
        request.entity = entity
        request.name = try string(object["name"], "name") ?? ""
        request.type = try string(object["type"], "type") ?? ""
        request.personal = try bool(object["personal"], "personal") ?? false
        request.purpose = try string(object["purpose"], "purpose") ?? ""
        request.maxBytes = UInt32(try integer(object["max_bytes"], "max_bytes", 0...Int64(CRMLimits.bodyBytes)) ?? 0)
        request.maxItems = UInt32(try integer(object["max_items"], "max_items", 0...Int64(CRMLimits.listItems)) ?? 0)
        if let min = try integer(object["min"], "min", Int64.min...Int64.max) { request.min = min }
        if let max = try integer(object["max"], "max", Int64.min...Int64.max) { request.max = max }
        request.choices = try strings(object["choices"], "choices")
        request.targetEntity = try string(object["target_entity"], "target_entity") ?? ""
        request.trackHistory = try bool(object["track_history"], "track_history") ?? false
        return request
    }

    /// A stale `If-Match` is 412 with the record's current version (as the ETag too).
    private static func versioned<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RPCError where error.code == .aborted {
            throw StaleVersion(
                error: error,
                current: error.metadata[stringValues: "crm-current-version"].first(where: { _ in true }).flatMap {
                    UInt64($0)
                })
        }
    }

    struct StaleVersion: Error {
        let error: RPCError
        let current: UInt64?
    }

    // MARK: Decoding

    static let noSuchPath = RPCError(
        code: .notFound,
        message: "no such records path; see the records routes in the README (POST /v1/records/{entity}, ...)")

    static func methodNotAllowed(_ method: String, _ path: String) -> RPCError {
        RPCError(code: .invalidArgument, message: "\(method) is not allowed on this records path")
    }

    static func invalid(_ message: String) -> RPCError { RPCError(code: .invalidArgument, message: message) }

    /// `{id}:verb` split at its last colon.
    static func splitVerb(_ segment: String) -> (String, String?) {
        guard let colon = segment.lastIndex(of: ":") else { return (segment, nil) }
        return (String(segment[..<colon]), String(segment[segment.index(after: colon)...]))
    }

    /// The version an `If-Match` header names: `"<version>"` (or bare digits), 1 to 2^63.
    static func expectedVersion(_ header: String?) throws -> UInt64 {
        guard let header else {
            throw PreconditionRequired()
        }
        var text = Substring(header.trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = text.dropFirst().dropLast() }
        guard (1...19).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }), let version = UInt64(text),
            version >= 1, version <= UInt64(Int64.max)
        else { throw invalid("`If-Match` must be the record's version, as its ETag gave it (\"<digits>\")") }
        return version
    }

    struct PreconditionRequired: Error {}

    static func object(_ body: Data, allowed: Set<String>? = nil) throws -> [String: JSONValue] {
        let parsed: JSONValue
        do { parsed = try StrictJSON.parse(body.isEmpty ? Data("{}".utf8) : body) } catch let failure
            as StrictJSON.Failure
        {
            throw invalid(failure.description)
        }
        guard case .object(let object) = parsed else { throw invalid("the body must be a JSON object") }
        if let allowed { try refuseUnknown(object, allowed: allowed) }
        return object
    }

    /// Members a client may not set are refused by name (no mass assignment).
    static func refuseUnknown(_ object: [String: JSONValue], allowed: Set<String>) throws {
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw invalid(
                "the body may hold only \(allowed.sorted().joined(separator: ", ")); `\(unknown.prefix(64))` is not one "
                    + "(ids, versions, owners, subjects and times are set by the cluster)")
        }
    }

    static func string(_ value: JSONValue?, _ name: String) throws -> String? {
        switch value {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case let other?: throw invalid("`\(name)` must be a string, not \(other.kind)")
        }
    }

    static func strings(_ value: JSONValue?, _ name: String) throws -> [String] {
        switch value {
        case nil, .null?: return []
        case .array(let items)?:
            guard items.count <= CRMLimits.fields else {
                throw invalid("`\(name)` holds at most \(CRMLimits.fields) items")
            }
            return try items.map {
                guard case .string(let text) = $0 else { throw invalid("`\(name)` must hold strings") }
                return text
            }
        case let other?: throw invalid("`\(name)` must be an array, not \(other.kind)")
        }
    }

    static func integer(_ value: JSONValue?, _ name: String, _ range: ClosedRange<Int64>) throws -> Int64? {
        switch value {
        case nil, .null?: return nil
        case .integer(let number)? where range.contains(number): return number
        case .integer?: throw invalid("`\(name)` must be \(range.lowerBound) to \(range.upperBound)")
        case let other?: throw invalid("`\(name)` must be a number, not \(other.kind)")
        }
    }

    static func bool(_ value: JSONValue?, _ name: String) throws -> Bool? {
        switch value {
        case nil, .null?: return nil
        case .bool(let flag)?: return flag
        case let other?: throw invalid("`\(name)` must be true or false, not \(other.kind)")
        }
    }

    static func serializable(_ consistency: String?) throws -> Bool {
        switch consistency ?? "linearizable" {
        case "linearizable": return false
        case "serializable": return true
        default: throw invalid("consistency must be \"linearizable\" or \"serializable\"")
        }
    }

    /// Field values typed by their definitions (`FieldValue` rules are checked by the CRM).
    static func fields(
        _ value: JSONValue?, _ definition: EntityDefinition, _ name: String
    ) throws
        -> [String: Crm_V1_FieldValue]
    {
        switch value {
        case nil, .null?: return [:]
        case .object(let members)?:
            guard members.count <= CRMLimits.fields else {
                throw invalid("`\(name)` holds at most \(CRMLimits.fields) fields")
            }
            var fields: [String: Crm_V1_FieldValue] = [:]
            for (field, json) in members {
                guard let definitionField = definition.field(named: field) else {
                    throw CRMRecords.rpcError(
                        RecordError.unknownField(entity: definition.code, name: String(field.prefix(64))))
                }
                fields[field] = try fieldValue(json, definitionField)
            }
            return fields
        case let other?: throw invalid("`\(name)` must be an object, not \(other.kind)")
        }
    }

    static func fieldValue(_ json: JSONValue, _ field: FieldDefinition) throws -> Crm_V1_FieldValue {
        func refuse(_ expected: String) -> RPCError {
            invalid("field `\(field.name)` must be \(expected), not \(json.kind)")
        }
        func textList(_ json: JSONValue) throws -> [String] {
            guard case .array(let items) = json, items.count <= CRMLimits.listItems else {
                throw refuse("an array of at most \(CRMLimits.listItems) strings")
            }
            return try items.map {
                guard case .string(let text) = $0 else { throw refuse("an array of strings") }
                return text
            }
        }
        var value = Crm_V1_FieldValue()
        switch (field.type, json) {
        case (.text, .string(let text)), (.choice, .string(let text)): value.text = text
        case (.texts, _), (.emails, _), (.phones, _):
            value.texts.items = try textList(json)
        case (.integer, .integer(let number)): value.integer = number
        case (.money, .object(let money)):
            guard money.count == 2, case .integer(let micros)? = money["micros"],
                case .string(let currency)? = money["currency"]
            else { throw refuse("{\"micros\": <integer>, \"currency\": \"<ISO 4217>\"}") }
            value.money = .with {
                $0.micros = micros
                $0.currency = currency
            }
        case (.date, .string(let text)):
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
                let year = UInt32(parts[0]), let month = UInt32(parts[1]), let day = UInt32(parts[2])
            else { throw refuse("a date as YYYY-MM-DD") }
            value.date = .with {
                $0.year = year
                $0.month = month
                $0.day = day
            }
        case (.timestamp, .integer(let millis)) where millis >= 0: value.timestampMillis = UInt64(millis)
        case (.bool, .bool(let flag)): value.boolean = flag
        case (.reference, .string(let id)): value.reference = id
        case (.references, _):
            value.references.ids = try textList(json)
        case (.targets, .array(let items)):
            guard items.count <= CRMLimits.listItems else { throw refuse("at most \(CRMLimits.listItems) targets") }
            value.targets.items = try items.map { item in
                guard case .object(let target) = item, target.count == 2, case .string(let entity)? = target["entity"],
                    case .string(let id)? = target["id"]
                else { throw refuse("an array of {\"entity\": ..., \"id\": ...}") }
                return .with {
                    $0.entity = entity
                    $0.id = id
                }
            }
        case (.integer, _), (.timestamp, _): throw refuse("an integer")
        case (.bool, _): throw refuse("true or false")
        case (.targets, _): throw refuse("an array of targets")
        case (.money, _): throw refuse("an amount object")
        default: throw refuse("a string")
        }
        return value
    }

    // MARK: Query strings

    struct Parameters {
        var values: [String: String] = [:]

        var fields: [String] { values["fields"].map { $0.split(separator: ",").map(String.init) } ?? [] }

        func flag(_ name: String) throws -> Bool {
            switch values[name] {
            case nil, "false": return false
            case "true": return true
            default: throw FrontRecordsHTTP.invalid("`\(name)` is true or false")
            }
        }

        func serializable() throws -> Bool { try FrontRecordsHTTP.serializable(values["consistency"]) }

        /// `limit`: 1 to `maximum` (0, the service's default, when not given).
        func limit(_ maximum: Int) throws -> UInt32 {
            guard let given = values["limit"] else { return 0 }
            guard let parsed = UInt32(given), (1...maximum).contains(Int(parsed)) else {
                throw FrontRecordsHTTP.invalid("`limit` is 1 to \(maximum)")
            }
            return parsed
        }

        func listRequest(_ entity: String) throws -> Crm_V1_ListRecordsRequest {
            var request = Crm_V1_ListRecordsRequest()
            request.entity = entity
            request.by = values["by"] ?? ""
            request.value = values["value"] ?? ""
            if let size = values["page_size"] {
                guard let parsed = UInt32(size), parsed <= 500 else {
                    throw FrontRecordsHTTP.invalid("`page_size` is 1 to 500")
                }
                request.pageSize = parsed
            }
            request.pageToken = values["page_token"] ?? ""
            request.fields = fields
            request.includeDeleted = try flag("include_deleted")
            request.serializable = try serializable()
            return request
        }
    }

    static let allowedParameters: Set<String> = [
        "by", "value", "page_size", "page_token", "include_deleted", "fields", "consistency", "destroy", "limit",
        "after",
    ]

    static func parameters(_ query: String) throws -> Parameters {
        var parameters = Parameters()
        guard !query.isEmpty else { return parameters }
        let pairs = query.split(separator: "&", omittingEmptySubsequences: true)
        guard pairs.count <= allowedParameters.count else { throw invalid("too many query parameters") }
        for pair in pairs {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts[0].removingPercentEncoding, allowedParameters.contains(name),
                let value = (parts.count == 2 ? String(parts[1]) : "").replacingOccurrences(of: "+", with: " ")
                    .removingPercentEncoding
            else {
                throw invalid(
                    "the query parameters are \(allowedParameters.sorted().joined(separator: ", ")) (personal values go in bodies, never in URLs)"
                )
            }
            guard parameters.values.updateValue(value, forKey: name) == nil else {
                throw invalid("query parameter `\(name)` is given twice")
            }
        }
        return parameters
    }

    // MARK: Encoding

    static func reply(_ object: Any) throws -> FrontHTTPAPI.Reply {
        FrontHTTPAPI.Reply(status: 200, body: try RecordJSON.data(object))
    }

    static func recordReply(_ record: Crm_V1_Record) throws -> FrontHTTPAPI.Reply {
        var reply = try reply(RecordJSON.object(record))
        reply.etag = record.version
        return reply
    }
}
