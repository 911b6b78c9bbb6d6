import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// One member crmctl can talk to.
struct Target {
    var id: UInt64
    var client: (host: String, port: Int)
    var admin: (host: String, port: Int)
    var endpoints: ClusterFile.Member?

    func address(_ api: Cluster.API) -> String {
        let endpoint = api == .admin ? admin : client
        return "\(endpoint.host):\(endpoint.port)"
    }
}

/// The members crmctl was pointed at, and its connections to them.
final class Cluster: @unchecked Sendable {
    enum API { case admin, client }

    let api: API
    let targets: [Target]
    let timeout: Double
    private let tls: ClientTLSFiles
    /// The cluster CA bundle (checkpoint certificates are checked against it).
    var caFile: String { tls.ca }
    /// The client certificate, key and CA this connection uses.
    var tlsFiles: ClientTLSFiles { tls }
    private var connections: [Int: MemberConnection] = [:]
    /// The signed-in user's token its client calls carry (nil: none).
    private let bearerToken: String?

    init(_ options: ConnectionOptions, api: API = .admin, bearerToken: String? = nil) throws {
        self.api = api
        self.bearerToken = bearerToken
        timeout = options.timeout
        let environment = ProcessInfo.processInfo.environment
        let endpoint = options.endpoint ?? environment["CRM_ENDPOINT"]
        var file: ClusterFile?
        var fileDirectory = ""
        let path = options.cluster ?? environment["CRM_CLUSTER"] ?? ClusterFile.defaultPath
        if FileManager.default.fileExists(atPath: path) {
            do {
                file = try ClusterFile.load(path: path)
            } catch {
                throw Failure.usage("\(error)")
            }
            fileDirectory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        } else if endpoint == nil {
            throw Failure.usage(
                "no cluster file at \(path): start a local cluster with `make up`, or pass --cluster FILE, or --endpoint HOST:PORT with --ca/--cert/--key"
            )
        }
        func resolve(_ value: String?) -> String? {
            guard let value else { return nil }
            return value.hasPrefix("/") || fileDirectory.isEmpty ? value : fileDirectory + "/" + value
        }
        guard let ca = options.ca ?? environment["CRM_CA"] ?? resolve(file?.tls.ca),
            let cert = options.cert ?? environment["CRM_CERT"] ?? resolve(file?.tls.cert),
            let key = options.key ?? environment["CRM_KEY"] ?? resolve(file?.tls.key)
        else {
            throw Failure.usage("no client certificate: pass --ca, --cert and --key (or set CRM_CA, CRM_CERT, CRM_KEY)")
        }
        for file in [ca, cert, key] where !FileManager.default.isReadableFile(atPath: file) {
            throw Failure.usage("cannot read \(file); cluster/make-certs.sh creates the CA and client certificates")
        }
        tls = ClientTLSFiles(ca: ca, certificate: cert, privateKey: key)
        if let endpoint {
            guard let parsed = Self.parse(endpoint) else {
                throw Failure.usage("--endpoint \(endpoint) is not host:port")
            }
            targets = [Target(id: options.member ?? 0, client: parsed, admin: parsed, endpoints: nil)]
        } else {
            var members = file!.members.compactMap { member -> Target? in
                guard let client = Self.parse(member.client), let admin = Self.parse(member.admin) else { return nil }
                return Target(id: member.id, client: client, admin: admin, endpoints: member)
            }
            if let wanted = options.member {
                members = members.filter { $0.id == wanted }
                if members.isEmpty { throw Failure.usage("member \(wanted) is not in \(path)") }
            }
            targets = members
        }
    }

    static func parse(_ text: String) -> (host: String, port: Int)? {
        Endpoint(text).map { ($0.host, $0.port) }
    }

    func connection(_ index: Int) throws -> MemberConnection {
        if let existing = connections[index] { return existing }
        let target = targets[index]
        let endpoint = api == .admin ? target.admin : target.client
        let connection = try MemberConnection(
            host: endpoint.host, port: endpoint.port, tls: tls,
            expectedMember: target.id == 0 ? nil : target.id, bearerToken: bearerToken)
        connections[index] = connection
        return connection
    }

    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .milliseconds(Int64(timeout * 1000))
        return options
    }

    /// Each target's status (nil with the error when it did not answer), in target order.
    /// Every member's status; `hashes` adds each one's state digest (a full read of its store).
    func statuses(hashes: Bool = false) async -> [(target: Target, status: Crm_V1_StatusResponse?, error: String?)] {
        var asked = Crm_V1_StatusRequest()
        asked.includeStateHash = hashes
        var results: [(Target, Crm_V1_StatusResponse?, String?)] = []
        await withTaskGroup(of: (Int, Crm_V1_StatusResponse?, String?).self) { group in
            for index in targets.indices {
                guard let connection = try? connection(index) else { continue }
                let options = callOptions
                let request = asked
                group.addTask {
                    do {
                        return (index, try await connection.admin.status(request, options: options), nil)
                    } catch let error as RPCError {
                        return (index, nil, error.message + (error.cause.map { " (\($0))" } ?? ""))
                    } catch {
                        return (index, nil, "\(error)")
                    }
                }
            }
            for await result in group { results.append((targets[result.0], result.1, result.2)) }
        }
        return results.sorted { $0.0.id < $1.0.id }
    }

    /// Runs `call` on the first target that answers; refusals end the command with status 1.
    func onAnyMember<T: Sendable>(_ call: @Sendable (MemberConnection) async throws -> T) async throws -> T {
        var unreachable: [String] = []
        for index in targets.indices {
            do {
                return try await call(try connection(index))
            } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
                unreachable.append("\(targets[index].address(api)): \(error.message)")
            } catch let error as RPCError {
                throw Failure.refused("\(targets[index].address(api)): \(error.message)")
            }
        }
        throw Failure.unreachable(unreachable)
    }

    /// Runs `call` on target `index`; a refusal ends the command with status 1, no answer with 4.
    func onTarget<T: Sendable>(_ index: Int, _ call: @Sendable (MemberConnection) async throws -> T) async throws -> T {
        do {
            return try await call(try connection(index))
        } catch let error as RPCError {
            let place = "member \(targets[index].id) (\(targets[index].address(api)))"
            throw error.code == .unavailable || error.code == .deadlineExceeded
                ? Failure.unreachable(["\(place): \(error.message)"]) : Failure.refused("\(place): \(error.message)")
        }
    }

    /// Runs `call` on the member that leads (found from the members' statuses).
    func onLeader<T: Sendable>(_ call: @escaping @Sendable (MemberConnection) async throws -> T) async throws -> T {
        let statuses = await statuses()
        let leaders = Set(statuses.compactMap { $0.status?.leaderID }.filter { $0 != 0 })
        if let leader = leaders.first, let index = targets.firstIndex(where: { $0.id == leader }) {
            do {
                return try await call(try connection(index))
            } catch let error as RPCError {
                throw error.code == .unavailable
                    ? Failure.unreachable(["leader \(leader): \(error.message)"])
                    : Failure.refused("leader \(leader): \(error.message)")
            }
        }
        return try await onAnyMember(call)
    }

    func close() {
        for connection in connections.values { Task { await connection.close() } }
    }
}

/// How a command ends when it cannot do its job; each sets its exit status.
enum Failure: Error, CustomStringConvertible {
    case usage(String)
    case refused(String)
    case unreachable([String])

    var description: String {
        switch self {
        case .usage(let message): return message
        case .refused(let message): return message
        case .unreachable(let members):
            return "no member answered" + (members.isEmpty ? "" : ":\n  " + members.joined(separator: "\n  "))
                + "\nIs the cluster running? (`make up` starts a local one; `crmctl status` shows who answers.)"
        }
    }

    var exitCode: Int32 {
        switch self {
        case .usage: return 2
        case .refused: return 1
        case .unreachable: return 4
        }
    }
}
