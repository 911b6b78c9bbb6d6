import Foundation

/// The cluster file `make up` (and the test harness) writes and crmctl, crm-bench and crm-chaos
/// read: every member's addresses, process id and config, and the client certificates to use.
/// Paths in it are relative to the file's directory.
public struct ClusterFile: Codable, Sendable, Equatable {
    public static let defaultPath = "run/local/cluster.json"

    public struct Member: Codable, Sendable, Equatable {
        public var id: UInt64
        public var peer: String
        public var client: String
        public var admin: String
        public var health: String?
        public var front: String?
        public var frontHTTP: String?
        public var pid: Int32?
        public var config: String?

        public init(
            id: UInt64, peer: String, client: String, admin: String, health: String? = nil, front: String? = nil,
            frontHTTP: String? = nil, pid: Int32? = nil, config: String? = nil
        ) {
            self.id = id
            self.peer = peer
            self.client = client
            self.admin = admin
            self.health = health
            self.front = front
            self.frontHTTP = frontHTTP
            self.pid = pid
            self.config = config
        }

        enum CodingKeys: String, CodingKey {
            case id, peer, client, admin, health, front, pid, config
            case frontHTTP = "front_http"
        }
    }

    public struct TLS: Codable, Sendable, Equatable {
        public var ca: String
        public var cert: String
        public var key: String

        public init(ca: String, cert: String, key: String) {
            self.ca = ca
            self.cert = cert
            self.key = key
        }
    }

    public var members: [Member]
    /// The operator's certificate (the admin API).
    public var tls: TLS
    /// An application's certificate, for client traffic (older files have none).
    public var clientTLS: TLS?

    public init(members: [Member], tls: TLS, clientTLS: TLS? = nil) {
        self.members = members
        self.tls = tls
        self.clientTLS = clientTLS
    }

    enum CodingKeys: String, CodingKey {
        case members, tls
        case clientTLS = "client_tls"
    }

    /// Reads and decodes the file; the error names the path and what is wrong.
    public static func load(path: String) throws -> ClusterFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterFileError(message: "no cluster file at \(path)")
        }
        do {
            return try JSONDecoder().decode(ClusterFile.self, from: data)
        } catch {
            throw ClusterFileError(
                message: "\(path) is not a cluster file (members with id, peer, client, admin; tls): \(error)")
        }
    }

    /// Writes the file with its keys sorted, so that it reads the same every time.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// A path from the file at `path`, made absolute against the file's directory.
    public static func resolve(_ value: String, relativeTo path: String) -> String {
        value.hasPrefix("/") ? value : URL(fileURLWithPath: path).deletingLastPathComponent().path + "/" + value
    }

    /// The certificate files of `tls`, resolved against the file at `path`.
    public static func files(_ tls: TLS, relativeTo path: String) -> ClientTLSFiles {
        ClientTLSFiles(
            ca: resolve(tls.ca, relativeTo: path), certificate: resolve(tls.cert, relativeTo: path),
            privateKey: resolve(tls.key, relativeTo: path))
    }
}

public struct ClusterFileError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
