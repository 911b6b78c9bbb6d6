import BinaryCoding
import CRM
import KVStore

/// A team: a name (configuration, not personal data) users and records belong to. A retired
/// team keeps its id and its members, but no user or record joins it any more.
public struct Team: Equatable, Sendable {
    public var id: CRMID
    public var name: String
    public var retired: Bool
    /// The version of the team's entry, the ETag of a rename or retirement.
    public var version: UInt64

    static let format: UInt8 = 1

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u8(Self.format)
        writer.blob(Array(name.utf8))
        writer.bool(retired)
        return writer.bytes
    }

    init(id: CRMID, name: String, retired: Bool, version: UInt64) {
        self.id = id
        self.name = name
        self.retired = retired
        self.version = version
    }

    init?(id: CRMID, encoded bytes: [UInt8], version: UInt64) {
        var reader = BinaryReader(bytes)
        guard reader.u8() == Self.format, let name = reader.text(limit: CRMRole.maxNameBytes),
            let retired = reader.bool(), reader.isAtEnd, CRMRole.isName(name)
        else { return nil }
        self.init(id: id, name: name, retired: retired, version: version)
    }
}

/// Teams as replicated configuration: `c/<workspace>/team/<id>` holds a team, and
/// `c/<workspace>/teamname/<name>` its id, so that a name is one team's. Users join teams by
/// an assignment that raises their authorization epoch (their sessions end), and nobody
/// changes their own teams.
public struct TeamStore: Sendable {
    public let directory: DirectoryChanges
    /// Teams one workspace may have, retired ones included.
    public static let maxTeams = 1000

    public init(directory: DirectoryChanges) { self.directory = directory }

    var workspace: UInt32 { directory.workspace }

    func key(_ id: CRMID) -> [UInt8] { CRMLayout.team(workspace: workspace, id: id) }

    func nameKey(_ name: String) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/teamname/") + Array(name.utf8) }

    public func team(_ id: CRMID) throws -> Team? {
        guard let value = try directory.records.kv.crmValue(key(id)) else { return nil }
        guard let version = value.version, let team = Team(id: id, encoded: value.payload, version: version) else {
            throw RecordError.keys(.doesNotOpen("team \(id)"))
        }
        return team
    }

    /// The team called `name` (nil: none).
    public func team(named name: String) throws -> Team? {
        guard CRMRole.isName(name), let value = try directory.records.kv.crmValue(nameKey(name)) else { return nil }
        guard let id = CRMID(bytes: value.payload) else { throw RecordError.keys(.doesNotOpen("team \(name)")) }
        return try team(id)
    }

    /// Every team, by id.
    public func all() throws -> [Team] {
        let prefix = CRMLayout.workspaceKey(workspace, "/team/")
        let page = try directory.records.kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: Self.maxTeams)
        return try page.entries.map { entry in
            guard let id = CRMID(bytes: Array(entry.key.dropFirst(prefix.count))), let version = entry.value.version,
                let team = Team(id: id, encoded: entry.value.payload, version: version)
            else { throw RecordError.keys(.doesNotOpen("a team entry")) }
            return team
        }
    }

    /// A new team called `name` with `id` (made by the proposing member).
    public func create(id: CRMID, name: String) throws -> Transaction {
        try checkName(name)
        try requireFree(name)
        guard try all().count < Self.maxTeams else {
            throw RecordError.tooLarge("a workspace has at most \(Self.maxTeams) teams")
        }
        let team = Team(id: id, name: name, retired: false, version: 0)
        return Transaction(
            conditions: [.absent(key: key(id)), .absent(key: nameKey(name))],
            operations: [.putStamped(key: key(id), value: team.encoded), .put(key: nameKey(name), value: id.bytes)])
    }

    /// Renames or retires (or brings back) the team read at `current`; fails if it changed since.
    public func change(_ current: Team, name: String, retired: Bool) throws -> Transaction {
        try checkName(name)
        var next = current
        next.name = name
        next.retired = retired
        var transaction = Transaction(
            conditions: [.version(key: key(current.id), current.version)],
            operations: [.putStamped(key: key(current.id), value: next.encoded)])
        if name != current.name {
            try requireFree(name)
            transaction.conditions.append(.absent(key: nameKey(name)))
            transaction.operations += [
                .delete(key: nameKey(current.name)), .put(key: nameKey(name), value: current.id.bytes),
            ]
        }
        return transaction
    }

    /// Conditions that hold while every team of `ids` exists and is not retired, as read now;
    /// refused naming the first that is not.
    public func joinable(_ ids: [CRMID]) throws -> [TransactionCondition] {
        try RecordChanges.checkTeams(ids)
        return try ids.map { id in
            guard let team = try team(id) else { throw RecordError.badRequest("there is no team \(id)") }
            guard !team.retired else { throw RecordError.badRequest("team \(team.name) is retired") }
            return .version(key: key(id), team.version)
        }
    }

    /// Puts `user` in exactly `teams` (existing, not retired), by `actor` (a user's owner string),
    /// raising the user's authorization epoch in the same transaction: their sessions end.
    public func assign(_ teams: [CRMID], to user: CRMID, by actor: String) throws -> Transaction {
        if let refusal = SeparationOfDuties.refusalToChangeTeams(actor: actor, of: DirectoryChanges.owner(of: user)) {
            throw RecordError.badRequest(refusal)
        }
        let pins = try joinable(teams)
        guard let record = try directory.records.read(.user, user),
            let credentials = try directory.credentials(of: user)
        else { throw RecordError.notFound(.user, user) }
        var transaction = try directory.records.update(record, set: [:], clear: [], teams: teams)
        transaction.conditions += pins
        let raise = directory.raiseAuthzEpoch(of: user, from: credentials)
        transaction.conditions += raise.conditions
        transaction.operations += raise.operations
        return transaction
    }

    /// Refuses a name another team has (its condition catches a team named so meanwhile).
    private func requireFree(_ name: String) throws {
        if try directory.records.kv.crmValue(nameKey(name)) != nil {
            throw RecordError.badRequest("there is already a team called \(name)")
        }
    }

    private func checkName(_ name: String) throws {
        guard CRMRole.isName(name) else {
            throw RecordError.badRequest(
                "a team's name is 1 to \(CRMRole.maxNameBytes) characters: a-z, 0-9, '-' and '_', a letter first")
        }
    }
}
