import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore
import Synchronization

/// `crm-bench crm`: closed-loop load on the records API through a front — create, update, get,
/// lookup and list of persons — next to `kv` puts and gets on the same front in the same run, at
/// each client count. Each cell runs alone (warm-up, then measured seconds); a table (or JSON)
/// of ops/s and p50/p99/p99.9 comes at the end, with the mean time the members spent on each
/// records call's authorization check in that cell (their `crm_authorization_duration_seconds`),
/// when the run is signed in (`--login-as`).
struct CRMBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm",
        abstract: "Records API load (create, update, get, lookup, list) next to KV put/get, through a front.")

    enum Operation: String, CaseIterable, ExpressibleByArgument {
        case create, update, get, lookup, list
        case kvPut = "kv-put"
        case kvGet = "kv-get"
    }

    @Option(help: "Client counts, comma-separated.") var clients = "1,16,64"
    @Option(help: "Operations, comma-separated (create, update, get, lookup, list, kv-put, kv-get).")
    var ops = Operation.allCases.map(\.rawValue).joined(separator: ",")
    @Option(help: "Seconds measured per cell.") var duration: Double = 5
    @Option(help: "Seconds of unmeasured load before each cell.") var warmup: Double = 1
    @Option(help: "Persons written before the run (read, updated, looked up and listed).") var persons = 2000
    @Option(help: "Companies the persons are linked to (each list reads one company's persons).") var companies = 40
    @Option(help: "KV keys written before the run (kv-put and kv-get choose among them).") var kvKeys = 10_000
    @Option(help: "The cluster file (default: $CRM_CLUSTER or run/local/cluster.json).") var cluster: String?
    @Option(help: "Load this member's front (default: the leader's).") var member: UInt64?
    @Option(help: "Connections shared by the clients.") var connections = 4
    @Flag(help: "Print JSON.") var json = false
    @Option(
        help:
            "Sign in as this user (its password read from standard input) and run every call in that session: required once the cluster has users."
    )
    var loginAs: String?

    func validate() throws {
        guard duration > 0, warmup >= 0 else { throw ValidationError("--duration must be positive") }
        guard (1...1_000_000).contains(persons), (1...persons).contains(companies) else {
            throw ValidationError("--persons must be 1 to 1,000,000 and --companies 1 to --persons")
        }
        guard clientCounts != nil else { throw ValidationError("--clients takes counts of 1 to 4096, comma-separated") }
        guard operations != nil else { throw ValidationError("--ops names unknown operations") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard (1...1_000_000).contains(kvKeys) else { throw ValidationError("--kv-keys must be 1 to 1,000,000") }
    }

    var clientCounts: [Int]? {
        let counts = clients.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ $0.map { (1...4096).contains($0) } ?? false }) else { return nil }
        return counts.map { $0! }
    }

    var operations: [Operation]? {
        let named = ops.split(separator: ",").map { Operation(rawValue: String($0)) }
        guard !named.isEmpty, named.allSatisfy({ $0 != nil }) else { return nil }
        return named.map { $0! }
    }

    func run() async throws {
        let target = try await ClusterTarget.resolve(clusterFile: cluster, member: member, front: true)
        var token: String?
        if let loginAs { token = try await Self.signIn(loginAs, target) }
        let pool = try (0..<connections).map { _ in
            try MemberConnection(host: target.host, port: target.port, tls: target.tls, bearerToken: token)
        }
        defer { for connection in pool { Task { await connection.close() } } }
        let fixture = try await Fixture.load(pool, persons: persons, companies: companies, kvKeys: kvKeys)
        var rows: [[String: Any]] = []
        for operation in operations! {
            for count in clientCounts! {
                let before = await AuthorizationMetrics.scrape(target.health)
                let result = await measure(operation, clients: count, pool: pool, fixture: fixture)
                var measured = row(operation, count, result)
                let after = await AuthorizationMetrics.scrape(target.health)
                if let before, let after, after.count > before.count {
                    measured["authorization_checks"] = after.count - before.count
                    measured["authorization_mean_us"] = (after.sum - before.sum) / (after.count - before.count) * 1e6
                }
                rows.append(measured)
                if !json { printRow(rows.last!, first: rows.count == 1) }
            }
        }
        if json {
            let object: [String: Any] = [
                "target_member": target.member, "via": "front", "duration_s": duration, "persons": persons,
                "rows": rows,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// The records the load works on, written first: companies, persons linked to them (each
    /// with an e-mail to look up), and KV keys for gets.
    final class Fixture: Sendable {
        let companies: [String]
        /// Person ids and their versions, which updates move on (each client updates its own slice).
        let persons: Mutex<[(id: String, version: UInt64)]>
        let personCount: Int
        let kvKeys: Int
        /// This run's own e-mail domain, so that a lookup finds exactly this run's person even
        /// in a cluster that earlier runs wrote to.
        let domain: String
        static let value = Data(repeating: 0x5A, count: 256)

        init(companies: [String], persons: [(String, UInt64)], kvKeys: Int, domain: String) {
            self.domain = domain
            self.companies = companies
            self.persons = Mutex(persons.map { (id: $0.0, version: $0.1) })
            personCount = persons.count
            self.kvKeys = kvKeys
        }

        static func load(
            _ pool: [MemberConnection], persons: Int, companies: Int, kvKeys: Int
        ) async throws -> Fixture {
            let companyIDs = try await parallel(companies, pool) { index, connection in
                try await connection.records.create(
                    CRMBenchmark.createRequest("company", ["name": .with { $0.text = "Company \(index)" }])
                ).record.id
            }
            let domain = "run\(UInt32.random(in: 0...UInt32.max)).bench.example"
            let personRecords = try await parallel(persons, pool) { index, connection in
                let record = try await connection.records.create(
                    CRMBenchmark.person(index, company: companyIDs[index % companyIDs.count], domain: domain)
                ).record
                return (record.id, record.version)
            }
            _ = try await parallel(kvKeys, pool) { index, connection in
                var request = Crm_V1_PutRequest()
                request.key = Data("bench/\(index)".utf8)
                request.value = value
                _ = try await connection.kv.put(request)
            }
            return Fixture(companies: companyIDs, persons: personRecords, kvKeys: kvKeys, domain: domain)
        }

        private static func parallel<T: Sendable>(
            _ count: Int, _ pool: [MemberConnection],
            _ make: @escaping @Sendable (Int, MemberConnection) async throws -> T
        ) async throws -> [T] {
            try await withThrowingTaskGroup(of: [(Int, T)].self) { group in
                for worker in 0..<32 {
                    group.addTask {
                        var made: [(Int, T)] = []
                        for index in stride(from: worker, to: count, by: 32) {
                            made.append((index, try await make(index, pool[worker % pool.count])))
                        }
                        return made
                    }
                }
                var all: [(Int, T)] = []
                for try await part in group { all += part }
                return all.sorted { $0.0 < $1.0 }.map(\.1)
            }
        }
    }

    /// Signs `username` in through the target's front (the password from standard input).
    static func signIn(_ username: String, _ target: ClusterTarget) async throws -> String {
        let data = FileHandle.standardInput.readData(ofLength: 1025)
        var request = Crm_V1_LoginRequest()
        request.username = username
        request.password = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")[0]
        let connection = try MemberConnection(host: target.host, port: target.port, tls: target.tls)
        defer { Task { await connection.close() } }
        var options = CallOptions.defaults
        options.timeout = .seconds(10)
        return try await connection.directory.login(request, options: options).token
    }

    static func createRequest(_ entity: String, _ fields: [String: Crm_V1_FieldValue]) -> Crm_V1_CreateRecordRequest {
        var request = Crm_V1_CreateRecordRequest()
        request.entity = entity
        request.fields = fields
        return request
    }

    static func person(_ index: Int, company: String, domain: String) -> Crm_V1_CreateRecordRequest {
        createRequest(
            "person",
            [
                "first_name": .with { $0.text = "First\(index)" }, "last_name": .with { $0.text = "Last\(index)" },
                "emails": .with { $0.texts = .with { $0.items = ["person\(index)@\(domain)"] } },
                "job_title": .with { $0.text = "Buyer" }, "company_id": .with { $0.reference = company },
                "lifecycle_stage": .with { $0.text = "lead" },
            ])
    }

    private func measure(
        _ operation: Operation, clients: Int, pool: [MemberConnection], fixture: Fixture
    ) async -> KVBenchmark.ClientResult {
        let measureFrom = Date().addingTimeInterval(warmup)
        let end = measureFrom.addingTimeInterval(duration)
        return await withTaskGroup(of: KVBenchmark.ClientResult.self) { group in
            for client in 0..<clients {
                let connection = pool[client % pool.count]
                group.addTask {
                    var generator = SystemRandomNumberGenerator()
                    return await KVBenchmark.ClientResult.closedLoop(measureFrom: measureFrom, end: end) { iteration in
                        try await Self.once(
                            operation, client: client, of: clients, iteration: iteration, connection, fixture,
                            &generator)
                    }
                }
            }
            var total = KVBenchmark.ClientResult()
            for await result in group { total.merge(result) }
            return total
        }
    }

    /// One request of `operation` by client `client` of `clients`.
    private static func once(
        _ operation: Operation, client: Int, of clients: Int, iteration: Int, _ connection: MemberConnection,
        _ fixture: Fixture, _ generator: inout SystemRandomNumberGenerator
    ) async throws {
        var options = CallOptions.defaults
        options.timeout = .seconds(10)
        let randomPerson = Int.random(in: 0..<fixture.personCount, using: &generator)
        switch operation {
        case .create:
            let index = fixture.personCount + client * 1_000_000 + iteration
            _ = try await connection.records.create(
                person(index, company: fixture.companies[index % fixture.companies.count], domain: fixture.domain),
                options: options)
        case .update:
            // Each client updates only its own slice of the persons, so versions never race.
            let slot = client + clients * (iteration % max(1, fixture.personCount / clients))
            guard slot < fixture.personCount else { return }
            let (id, version) = fixture.persons.withLock { $0[slot] }
            var request = Crm_V1_UpdateRecordRequest()
            request.entity = "person"
            request.id = id
            request.expectedVersion = version
            request.set = ["job_title": .with { $0.text = "Buyer \(iteration)" }]
            let updated = try await connection.records.update(request, options: options).record
            fixture.persons.withLock { $0[slot].version = updated.version }
        case .get:
            var request = Crm_V1_GetRecordRequest()
            request.entity = "person"
            request.id = fixture.persons.withLock { $0[randomPerson].id }
            _ = try await connection.records.get(request, options: options)
        case .lookup:
            var request = Crm_V1_LookupRequest()
            request.entity = "person"
            request.by = "email"
            request.value = "person\(randomPerson)@\(fixture.domain)"
            let found = try await connection.records.lookup(request, options: options)
            guard found.records.count == 1 else { throw BenchError.lookupMissed }
        case .list:
            var request = Crm_V1_ListRecordsRequest()
            request.entity = "person"
            request.by = "company"
            request.value = fixture.companies[Int.random(in: 0..<fixture.companies.count, using: &generator)]
            request.pageSize = 20
            request.fields = ["lifecycle_stage", "company_id"]
            _ = try await connection.records.list(request, options: options)
        case .kvPut:
            var request = Crm_V1_PutRequest()
            request.key = Data("bench/\(Int.random(in: 0..<fixture.kvKeys, using: &generator))".utf8)
            request.value = Fixture.value
            _ = try await connection.kv.put(request, options: options)
        case .kvGet:
            var request = Crm_V1_GetRequest()
            request.key = Data("bench/\(Int.random(in: 0..<fixture.kvKeys, using: &generator))".utf8)
            request.consistency = .linearizable
            _ = try await connection.kv.get(request, options: options)
        }
    }

    enum BenchError: Error, CustomStringConvertible {
        case lookupMissed
        var description: String { "a lookup did not find its person" }
    }

    private func row(_ operation: Operation, _ clients: Int, _ result: KVBenchmark.ClientResult) -> [String: Any] {
        func milliseconds(_ percentile: Double) -> Double {
            Double(result.histogram.valueAtPercentile(percentile)) / 1000
        }
        return [
            "op": operation.rawValue, "clients": clients, "operations": result.operations,
            "ops_per_second": Double(result.operations) / duration,
            "p50_ms": milliseconds(50), "p99_ms": milliseconds(99), "p99_9_ms": milliseconds(99.9),
            "errors": result.errors,
        ]
    }

    private func printRow(_ row: [String: Any], first: Bool) {
        if first {
            print("crm-bench crm: persons=\(persons) kv keys=\(kvKeys) duration=\(duration)s per cell, through a front")
            print("op        clients     ops/s    p50 ms    p99 ms  p99.9 ms  authz µs  errors")
        }
        let authorization = (row["authorization_mean_us"] as? Double).map { String(format: "%9.0f", $0) } ?? "        -"
        let errors = (row["errors"] as! [String: Int]).map { "\($0.key): \($0.value)" }.sorted().joined(separator: ", ")
        print(
            padded(row["op"] as! String, 8)
                + String(
                    format: "%9d %9.0f %9.2f %9.2f %9.2f %@", row["clients"] as! Int, row["ops_per_second"] as! Double,
                    row["p50_ms"] as! Double, row["p99_ms"] as! Double, row["p99_9_ms"] as! Double,
                    authorization + "  " + (errors.isEmpty ? "0" : errors)))
    }
}
