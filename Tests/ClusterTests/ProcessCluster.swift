import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What the process tests add to the shared harness (`ClusterHarness.ProcessCluster`): a cluster
/// in a temporary directory from the binaries built next to the tests, and client calls.
extension ProcessCluster {
    static var binaries: URL {
        Programs.binaries(
            near: CommandLine.arguments[0], fallback: repository.appendingPathComponent(".build/debug"))
    }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// Founders `ids` and `spares` (certificates and a `join: true` config, not started), each
    /// config changed by `configure`. `deadAfterSeconds` writes a `failover` section listing the
    /// spares (replaced automatically if `autoReplace`).
    convenience init(
        ids: [UInt64] = [1, 2, 3], spares: [UInt64] = [], snapshotEvery: Int = 10_000, tlsReloadSeconds: Int = 30,
        deadAfterSeconds: Int? = nil, autoReplace: Bool = false, clients: [String] = ["app"],
        configure: @escaping (inout NodeConfig) -> Void = { _ in }
    ) throws {
        try self.init(
            ids: ids, spares: spares, directory: NSTemporaryDirectory() + "crm-processes-" + UUID().uuidString,
            binaries: Self.binaries, repository: Self.repository, clients: clients, removesDirectory: true)
        let spareEndpoints = spares.map { addresses($0).endpoints($0) }
        try writeConfigs { config in
            config.limits = NodeConfig.Limits(snapshotEveryEntries: snapshotEvery)
            config.tls.reloadIntervalSeconds = tlsReloadSeconds
            if let deadAfterSeconds {
                config.failover = NodeConfig.Failover(
                    deadAfterSeconds: deadAfterSeconds, autoReplace: autoReplace,
                    spares: spareEndpoints.isEmpty ? nil : spareEndpoints)
            }
            configure(&config)
        }
    }

    var clientTLS: ClientTLSFiles { tls("crmctl") }

    /// Member `id`'s loopback ports.
    func ports(_ id: UInt64) -> (peer: Int, client: Int, admin: Int, health: Int, front: Int, frontHTTP: Int) {
        let address = addresses(id)
        return (
            address.peer.port, address.client.port, address.admin.port, address.health.port, address.front.port,
            address.frontHTTP.port
        )
    }

    func connection(_ id: UInt64, admin: Bool = false) throws -> MemberConnection {
        try connection(id, admin ? .admin : .client)
    }

    /// A gRPC connection to member `id`'s front as client `client`.
    func frontConnection(_ id: UInt64, client: String = "app") throws -> MemberConnection {
        try connection(id, .front, as: client)
    }

    static let shortCall: CallOptions = {
        var options = CallOptions.defaults
        options.timeout = .seconds(2)
        return options
    }()

    func put(_ key: String, _ value: String, via id: UInt64, session: (UInt64, UInt64)? = nil) async throws {
        var request = Crm_V1_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        if let (sessionID, sequence) = session {
            request.session.sessionID = sessionID
            request.session.sequence = sequence
        }
        _ = try await connection(id).kv.put(request, options: Self.shortCall)
    }

    func get(_ key: String, via id: UInt64, serializable: Bool = false) async throws -> String? {
        var request = Crm_V1_GetRequest()
        request.key = Data(key.utf8)
        request.consistency = serializable ? .serializable : .linearizable
        let response = try await connection(id).kv.get(request, options: Self.shortCall)
        return response.found ? String(decoding: response.value, as: UTF8.self) : nil
    }

    /// GET on the member's health listener (`/metrics`, `/readyz`, `/livez`): status and body.
    func health(_ id: UInt64, _ path: String = "/metrics") async -> (status: Int, body: String) {
        guard
            let (data, response) = try? await URLSession.shared.data(
                from: URL(string: "http://\(addresses(id).health)\(path)")!)
        else {
            return (0, "")
        }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// The alarms member `id` reports in its `MemberState` (none when it does not answer).
    func alarms(_ id: UInt64) async -> [Crm_V1_AlarmKind] {
        let state = try? await connection(id).kv.memberState(Crm_V1_MemberStateRequest(), options: Self.shortCall)
        return state?.alarms.map(\.kind) ?? []
    }

    /// Runs one of the built tools (crmctl, crm-bench) to the end: exit status, stdout, stderr.
    static func tool(
        _ name: String, _ arguments: [String], input: Data? = nil
    ) throws -> (status: Int32, output: String, errors: String) {
        try Programs.capture(binaries.appendingPathComponent(name).path, arguments, input: input)
    }

    /// Runs any program to the end (`input` on its standard input): exit status, stdout, stderr.
    static func tool(
        absolute path: String, _ arguments: [String], input: Data? = nil
    ) throws -> (status: Int32, output: String, errors: String) {
        try Programs.capture(path, arguments, input: input)
    }

    /// Front HTTP request from the client `client` (its certificate, and its records user's
    /// session once `signInRecordsUser` ran): status, headers, body.
    func frontHTTP(
        _ id: UInt64, _ method: String, _ path: String, json: String = "", client: String = "app",
        headers: [(String, String)] = []
    ) async throws -> HTTPSRequest.Response {
        let files = tls(client)
        var headers = headers
        if let token = bearerTokens.withLock({ $0[client] }),
            !headers.contains(where: { $0.0.lowercased() == "authorization" })
        {
            headers.append(("Authorization", "Bearer \(token)"))
        }
        return try await HTTPSRequest.send(
            port: addresses(id).frontHTTP.port, method: method, path: path, body: Data(json.utf8),
            tls: (files.ca, files.certificate, files.privateKey), extraHeaders: headers)
    }

    /// Member views from front `id`'s `/v1/cluster` (empty when the reply is not that JSON).
    func frontMembers(_ id: UInt64) async -> [[String: Any]] {
        guard let view = try? await frontHTTP(id, "GET", "/v1/cluster"),
            let object = try? JSONSerialization.jsonObject(with: view.body) as? [String: Any]
        else { return [] }
        return object["members"] as? [[String: Any]] ?? []
    }

    /// Waits until front `id` has polled every member as readable: right after an election a
    /// follower that has not yet heard the new leader is (correctly) shown "knows no leader".
    func frontSeesEveryMemberReadable(_ id: UInt64, seconds: Double = 15) async -> Bool {
        await eventually(seconds: seconds) {
            let members = await frontMembers(id)
            return members.count == ids.count && members.allSatisfy { $0["readable"] as? Bool == true }
        }
    }
}

/// Every suite that starts real processes, run one test at a time: each test owns the machine's
/// ports and cores while it measures.
@Suite(.serialized) struct RealProcessTests {}
