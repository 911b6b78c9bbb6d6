import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Synchronization

/// CRM records under the drill's faults: each client creates persons (each with a request id and
/// an e-mail of its own), updates its own persons at the version it last saw, reads any known
/// person, looks its own persons up by e-mail and lists the first page of all persons, through
/// the fronts. What it saw is judged after the drill: versions in real-time order (no read,
/// lookup or list older than a change acknowledged before it began, every update above its
/// base), no lookup or list missing a person whose create was acknowledged before it began,
/// every acknowledged create present exactly once, and on every member the CRM check (indexes
/// agree with records).
struct RecordWorkload: Sendable {
    /// One completed call on a record: when it began and ended, the version it saw or made.
    struct Observation: Sendable {
        var record: String
        var kind: String
        var invoked: UInt64
        var completed: UInt64
        var version: UInt64
        /// For an update: the version it was based on.
        var base: UInt64?
    }

    /// A create: its e-mail (to find it at the end) and whether it was acknowledged.
    struct Create: Sendable {
        var email: String
        var acknowledged: Bool
    }

    /// A lookup of one acknowledged person's e-mail, and the ids it found.
    struct Lookup: Sendable {
        var record: String
        var invoked: UInt64
        var found: [String]
    }

    /// The first page of all persons (by id): the ids in the order returned, and whether more
    /// pages follow.
    struct Listing: Sendable {
        var invoked: UInt64
        var ids: [String]
        var more: Bool
    }

    struct Reads: Sendable {
        var lookups: [Lookup] = []
        var listings: [Listing] = []
    }

    final class Ledger: Sendable {
        private let state = Mutex<(observations: [Observation], creates: [Create], known: [String], errors: Int)>(
            ([], [], [], 0))
        private let reads = Mutex(Reads())

        func observed(_ observation: Observation) { state.withLock { $0.observations.append(observation) } }
        func lookedUp(_ lookup: Lookup) { reads.withLock { $0.lookups.append(lookup) } }
        func listed(_ listing: Listing) { reads.withLock { $0.listings.append(listing) } }
        var readsSnapshot: Reads { reads.withLock { $0 } }
        func created(_ create: Create, id: String?) {
            state.withLock {
                $0.creates.append(create)
                if let id { $0.known.append(id) }
            }
        }
        func failed() { state.withLock { $0.errors += 1 } }
        func anyKnown(_ random: inout some RandomNumberGenerator) -> String? {
            state.withLock { $0.known.isEmpty ? nil : $0.known[Int.random(in: 0..<$0.known.count, using: &random)] }
        }
        var snapshot: (observations: [Observation], creates: [Create], errors: Int) {
            state.withLock { ($0.observations, $0.creates, $0.errors) }
        }
    }

    let clients: Int
    let fronts: [Endpoint]
    let tls: ClientTLSFiles
    let namespace: String
    /// The records user's session the clients act in.
    var bearerToken: String?
    let ledger = Ledger()
    var timeout: Duration = .seconds(6)

    func run(until end: UInt64) async throws {
        let pools = try (0..<clients).map { client in
            try FrontPool(
                Array(fronts[(client % fronts.count)...] + fronts[..<(client % fronts.count)]), tls: tls,
                bearerToken: bearerToken)
        }
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask { await runClient(client, pools[client], until: end) }
            }
        }
        for pool in pools { await pool.close() }
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        return options
    }

    private func runClient(_ client: Int, _ pool: FrontPool, until end: UInt64) async {
        var mine: [(id: String, version: UInt64, email: String)] = []
        var sequence = 0
        var random = SystemRandomNumberGenerator()
        while Workload.now() < end {
            sequence += 1
            let roll = Int.random(in: 0..<20, using: &random)
            if roll < 6 || mine.isEmpty {
                let email = "\(namespace)c\(client)-\(sequence)@chaos.example"
                if let made = await create(pool, email: email) { mine.append((made.id, made.version, email)) }
                continue
            }
            let slot = Int.random(in: 0..<mine.count, using: &random)
            if roll < 11 {
                if let version = await update(pool, (mine[slot].id, mine[slot].version), sequence) {
                    mine[slot].version = version
                }
            } else if roll < 15 {
                if let id = ledger.anyKnown(&random) { await read(pool, id) }
            } else if roll < 18 {
                await lookup(pool, id: mine[slot].id, email: mine[slot].email)
            } else {
                await listFirstPage(pool)
            }
        }
    }

    private func create(_ pool: FrontPool, email: String) async -> (id: String, version: UInt64)? {
        var request = Crm_V1_CreateRecordRequest()
        request.entity = "person"
        request.requestID = email
        request.fields = [
            "last_name": .with { $0.text = "Chaos" },
            "emails": .with { $0.texts = .with { $0.items = [email] } },
        ]
        let options = self.options
        // An unknown outcome is sent once more with the same request id: it must create once.
        for _ in 0..<2 {
            let invoked = Workload.now()
            do {
                let record = try await pool.records { try await $0.create(request, options: options) }.record
                ledger.observed(
                    Observation(
                        record: record.id, kind: "create", invoked: invoked, completed: Workload.now(),
                        version: record.version))
                ledger.created(Create(email: email, acknowledged: true), id: record.id)
                return (record.id, record.version)
            } catch {
                ledger.failed()
            }
        }
        ledger.created(Create(email: email, acknowledged: false), id: nil)
        return nil
    }

    /// The new version, or nil (not applied, or unknown: the next update's ABORTED says which).
    private func update(_ pool: FrontPool, _ record: (id: String, version: UInt64), _ sequence: Int) async -> UInt64? {
        var request = Crm_V1_UpdateRecordRequest()
        request.entity = "person"
        request.id = record.id
        request.expectedVersion = record.version
        request.set = ["job_title": .with { $0.text = "step \(sequence)" }]
        let options = self.options
        let invoked = Workload.now()
        do {
            let updated = try await pool.records { try await $0.update(request, options: options) }.record
            ledger.observed(
                Observation(
                    record: record.id, kind: "update", invoked: invoked, completed: Workload.now(),
                    version: updated.version, base: record.version))
            return updated.version
        } catch let error as RPCError where error.code == .aborted {
            // An earlier update whose answer was lost did apply: carry on from the current version.
            return error.metadata[stringValues: "crm-current-version"].first(where: { _ in true }).flatMap {
                UInt64($0)
            }
        } catch {
            ledger.failed()
            return nil
        }
    }

    private func read(_ pool: FrontPool, _ id: String) async {
        var request = Crm_V1_GetRecordRequest()
        request.entity = "person"
        request.id = id
        let options = self.options
        let invoked = Workload.now()
        do {
            let record = try await pool.records { try await $0.get(request, options: options) }.record
            ledger.observed(
                Observation(
                    record: id, kind: "get", invoked: invoked, completed: Workload.now(), version: record.version))
        } catch {
            ledger.failed()
        }
    }

    private func lookup(_ pool: FrontPool, id: String, email: String) async {
        var request = Crm_V1_LookupRequest()
        request.entity = "person"
        request.by = "email"
        request.value = email
        let options = self.options
        let invoked = Workload.now()
        do {
            let found = try await pool.records { try await $0.lookup(request, options: options) }.records
            let completed = Workload.now()
            for record in found where record.id == id {
                ledger.observed(
                    Observation(
                        record: id, kind: "lookup", invoked: invoked, completed: completed, version: record.version))
            }
            ledger.lookedUp(Lookup(record: id, invoked: invoked, found: found.map(\.id)))
        } catch {
            ledger.failed()
        }
    }

    static let listPageSize: UInt32 = 20

    private func listFirstPage(_ pool: FrontPool) async {
        var request = Crm_V1_ListRecordsRequest()
        request.entity = "person"
        request.pageSize = Self.listPageSize
        let options = self.options
        let invoked = Workload.now()
        do {
            let page = try await pool.records { try await $0.list(request, options: options) }
            let completed = Workload.now()
            for record in page.records {
                ledger.observed(
                    Observation(
                        record: record.id, kind: "list", invoked: invoked, completed: completed,
                        version: record.version))
            }
            ledger.listed(Listing(invoked: invoked, ids: page.records.map(\.id), more: !page.nextPageToken.isEmpty))
        } catch {
            ledger.failed()
        }
    }

    // MARK: Judging

    static let readKinds: Set<String> = ["get", "lookup", "list"]

    /// No lookup or list missed a person whose create was acknowledged before it began: a lookup
    /// finds the one person with that e-mail; the first page of all persons (in id order) holds
    /// every such person up to its last id (all of them when it is the only page).
    static func readsComplete(_ observations: [Observation], _ reads: Reads) -> Verdict.Check {
        var createdAt: [String: UInt64] = [:]
        for observation in observations where observation.kind == "create" {
            createdAt[observation.record] = min(createdAt[observation.record] ?? .max, observation.completed)
        }
        var problems: [String] = []
        for lookup in reads.lookups {
            if lookup.found.count > 1 { problems.append("a lookup of one e-mail found \(lookup.found.count) persons") }
            if let created = createdAt[lookup.record], created < lookup.invoked, !lookup.found.contains(lookup.record) {
                problems.append("a lookup missed person \(lookup.record), created before it began")
            }
        }
        for listing in reads.listings {
            guard listing.ids == listing.ids.sorted(), Set(listing.ids).count == listing.ids.count else {
                problems.append("a list page is not in id order")
                continue
            }
            let returned = Set(listing.ids)
            let cutoff = listing.more ? listing.ids.last : nil
            for (record, created) in createdAt
            where created < listing.invoked && !returned.contains(record) && cutoff.map({ record <= $0 }) ?? true {
                problems.append("a list page missed person \(record), created before it began")
            }
        }
        return Verdict.Check(
            name: "lookups and lists complete", passed: problems.isEmpty,
            detail: problems.isEmpty
                ? "\(reads.lookups.count) lookups and \(reads.listings.count) list pages found every person acknowledged before them"
                : problems.prefix(5).joined(separator: "; "))
    }

    /// No call saw a version older than one acknowledged before it began; every update made a
    /// version above its base, and versions of one record are never made twice.
    static func versionsInOrder(_ observations: [Observation]) -> Verdict.Check {
        var problems: [String] = []
        let byRecord = Dictionary(grouping: observations, by: \.record)
        for (record, seen) in byRecord {
            let byCompletion = seen.sorted { $0.completed < $1.completed }
            var made = Set<UInt64>()
            for observation in seen where !readKinds.contains(observation.kind) {
                if !made.insert(observation.version).inserted {
                    problems.append("record \(record): version \(observation.version) was made twice")
                }
                if let base = observation.base, observation.version <= base {
                    problems.append("record \(record): an update based on \(base) made \(observation.version)")
                }
            }
            for observation in seen {
                // The newest version acknowledged before this call began.
                let floor = byCompletion.prefix { $0.completed < observation.invoked }.map(\.version).max() ?? 0
                if observation.version < floor {
                    problems.append(
                        "record \(record): a \(observation.kind) saw version \(observation.version) after \(floor) was acknowledged"
                    )
                }
            }
        }
        return Verdict.Check(
            name: "records in real-time order", passed: problems.isEmpty,
            detail: problems.isEmpty
                ? "\(observations.count) record calls over \(byRecord.count) records"
                : problems.prefix(5).joined(separator: "; "))
    }

    /// Each create found by its e-mail: an acknowledged one exactly once, any other at most once.
    func createsOnce(_ creates: [Create]) async -> Verdict.Check {
        guard let pool = try? FrontPool(fronts, tls: tls, bearerToken: bearerToken) else {
            return Verdict.Check(name: "records created once", passed: false, detail: "no front")
        }
        defer { Task { await pool.close() } }
        var problems: [String] = []
        let options = self.options
        for create in creates {
            var request = Crm_V1_LookupRequest()
            request.entity = "person"
            request.by = "email"
            request.value = create.email
            let sent = request
            guard let found = try? await pool.records({ try await $0.lookup(sent, options: options) }).records else {
                problems.append("a lookup failed")
                continue
            }
            if found.count > 1 || (create.acknowledged && found.count != 1) {
                problems.append(
                    "a \(create.acknowledged ? "" : "not acknowledged ")create is there \(found.count) times")
            }
        }
        let acknowledged = creates.filter(\.acknowledged).count
        return Verdict.Check(
            name: "records created once", passed: problems.isEmpty,
            detail: problems.isEmpty
                ? "\(acknowledged) acknowledged creates found once each, \(creates.count - acknowledged) others at most once"
                : problems.prefix(5).joined(separator: "; "))
    }
}
