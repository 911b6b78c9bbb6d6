import Foundation
import Raft
import Testing

@testable import Node

/// A config directory with key files, so that file checks can pass or fail on purpose.
final class ConfigDirectory: @unchecked Sendable {
    let path = NSTemporaryDirectory() + "crm-config-" + UUID().uuidString

    init() throws {
        try FileManager.default.createDirectory(atPath: path + "/data", withIntermediateDirectories: true)
        for (name, mode) in [
            ("ca.pem", 0o644), ("member-1.pem", 0o644), ("member-1.key", 0o600), ("master-1.key", 0o600),
        ] {
            FileManager.default.createFile(
                atPath: path + "/" + name, contents: Data("x".utf8), attributes: [.posixPermissions: mode])
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ yaml: String) throws -> String {
        let file = path + "/node.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }
}

let validConfig = """
    id: 1
    data_dir: data
    master_key_file: master-1.key
    listen:
      peer: 127.0.0.1:7001
      client: 127.0.0.1:7101
      admin: 127.0.0.1:7201
      health: 127.0.0.1:7301
    members:
      - {id: 1, peer: "127.0.0.1:7001", client: "127.0.0.1:7101", admin: "127.0.0.1:7201"}
      - {id: 2, peer: "127.0.0.1:7002", client: "127.0.0.1:7102", admin: "127.0.0.1:7202"}
      - {id: 3, peer: "127.0.0.1:7003", client: "127.0.0.1:7103", admin: "127.0.0.1:7203"}
    tls:
      ca: ca.pem
      cert: member-1.pem
      key: member-1.key
    """

@Suite struct NodeConfigTests {
    @Test func aValidConfigLoadsWithDefaultsAndResolvedPaths() throws {
        let directory = try ConfigDirectory()
        let config = try NodeConfig.load(path: try directory.write(validConfig))
        #expect(config.id == 1 && config.members.count == 3)
        #expect(config.dataDir == URL(fileURLWithPath: directory.path + "/data").standardized.path)
        #expect(config.tls.key.hasSuffix("/member-1.key") && config.tls.key.hasPrefix("/"))
        #expect(config.tickMilliseconds == 50 && config.electionTicks == 10 && config.heartbeatTicks == 1)
        #expect(config.selfEndpoints.client == Endpoint(host: "127.0.0.1", port: 7101))
        #expect(config.adminIdentities.isEmpty, "deny by default: no `admins`, no admin")
        #expect(Endpoint("[::1]:7001") == Endpoint(host: "::1", port: 7001))
        #expect(Endpoint("no-port") == nil && Endpoint("host:99999") == nil)
    }

    /// The harness writes member configs by encoding `NodeConfig`; every key it can write must be
    /// one the loader's schema knows, and read back as the same value.
    @Test func everyKeyTheConfigCanHoldReadsBackFromItsYAML() throws {
        func at(_ port: Int) -> Endpoint { Endpoint(host: "127.0.0.1", port: port) }
        let spare = MemberEndpoints(id: 4, peer: at(7004), client: at(7104), admin: at(7204))
        let config = NodeConfig(
            id: 1, dataDir: "data", masterKeyFile: "master-1.key",
            listen: .init(peer: at(7001), client: at(7101), admin: at(7201), health: at(7301)),
            members: [MemberEndpoints(id: 1, peer: at(7001), client: at(7101), admin: at(7201))],
            tls: .init(
                ca: "ca.pem", cert: "member-1.pem", key: "member-1.key", reloadIntervalSeconds: 5, denyFile: "deny"),
            advertise: .init(peer: at(8001), client: at(8101), admin: at(8201)), join: true, admins: ["crmctl"],
            timing: .init(
                tickMilliseconds: 20, electionTicks: 12, heartbeatTicks: 2, requestTimeoutMilliseconds: 4000,
                shutdownHandoffMilliseconds: 1500),
            limits: .init(
                maxMessageBytes: 8 << 20, maxSendQueueBytes: 32 << 20, snapshotEveryEntries: 500, maxSessions: 1000,
                maxSessionsPerClient: 10),
            health: .init(
                checkIntervalMilliseconds: 100, diskReserveBytes: 1 << 20, storageQuotaBytes: 1 << 30,
                fsyncSlowMilliseconds: 150, fsyncWindowMilliseconds: 1000, maxApplyLag: 500, stallMilliseconds: 300,
                verifyIntervalHours: 6, allowNonLoopback: false),
            failover: .init(
                handOffOnDiskFailure: false, deadAfterSeconds: 60, autoReplace: true, spares: [spare], minVoters: 3),
            front: .init(
                grpc: at(7401), http: at(7501), requestsPerSecond: 100, burst: 200, requestTimeoutMilliseconds: 3000,
                drainMilliseconds: 1000, pollMilliseconds: 150),
            connections: .init(
                maxPerListener: 100, maxPerAddress: 10, firstRequestMilliseconds: 1000, idleMilliseconds: 60_000,
                requestReadMilliseconds: 5000, maxConcurrentStreams: 64, maxAgeSeconds: 600))
        let yaml = try config.yaml()
        #expect(try NodeConfig.parse(yaml, path: "encoded.yaml") == config, "\(yaml)")
    }

    private func problems(_ yaml: String, checkFiles: Bool = true) throws -> [String] {
        let directory = try ConfigDirectory()
        do {
            _ = try NodeConfig.load(path: try directory.write(yaml), checkFiles: checkFiles)
            return []
        } catch let error as ConfigError {
            return error.problems
        }
    }

    @Test func misspeltKeysAreNamedWithTheKeysThatExist() throws {
        let found = try problems(validConfig.replacingOccurrences(of: "  health:", with: "  heath:"))
        #expect(
            found.contains { $0.hasPrefix("listen.heath: unknown key; the keys here are admin, client, health, peer") })
    }

    @Test func missingKeysAndBadValuesSayWhere() throws {
        #expect(
            try problems(validConfig.replacingOccurrences(of: "master_key_file: master-1.key\n", with: ""))
                .contains("master_key_file: missing; add it (see cluster/examples/three-hosts/node-1.yaml)"))
        #expect(
            try problems(validConfig.replacingOccurrences(of: "peer: 127.0.0.1:7001", with: "peer: localhost"))
                .contains { $0.contains("'localhost' is not host:port") })
        #expect(try problems("just text").contains("the file is empty or not a YAML mapping"))
    }

    @Test func inconsistentSettingsAreAllReported() throws {
        let yaml =
            validConfig
            .replacingOccurrences(of: "id: 1\n", with: "id: 4\n")
            .replacingOccurrences(of: "127.0.0.1:7301", with: "127.0.0.1:7201")
            + "\ntiming:\n  election_ticks: 1\n"
        let found = try problems(yaml)
        #expect(
            found.contains(
                "members: this member (id 4) is not listed; add its own entry with its peer, client and admin addresses"
            ))
        #expect(
            found.contains("listen.admin and listen.health are both 127.0.0.1:7201; each listener needs its own port"))
        #expect(found.contains { $0.hasPrefix("timing.election_ticks (1) must be at least twice") })
        #expect(found.count >= 3)
    }

    @Test func unsafeOrMissingFilesAreRefusedWithTheFix() throws {
        let directory = try ConfigDirectory()
        try FileManager.default.setAttributes(
            [.posixPermissions: 0o644], ofItemAtPath: directory.path + "/member-1.key")
        try FileManager.default.removeItem(atPath: directory.path + "/ca.pem")
        do {
            _ = try NodeConfig.load(path: try directory.write(validConfig))
            Issue.record("loaded a config with an unsafe key and a missing CA")
        } catch let error as ConfigError {
            #expect(
                error.problems.contains {
                    $0.hasPrefix("tls.key:") && $0.hasSuffix("run `chmod 600 \(directory.path)/member-1.key`")
                })
            #expect(
                error.problems.contains { $0.hasPrefix("tls.ca:") && $0.contains("cluster/make-certs.sh creates it") })
            #expect(error.description.contains("2 problems"))
        }
    }

    @Test func duplicateMembersAndWildcardAdvertisementsAreRefused() throws {
        let yaml =
            validConfig
            .replacingOccurrences(of: "{id: 3, peer: \"127.0.0.1:7003\"", with: "{id: 2, peer: \"127.0.0.1:7002\"")
            .replacingOccurrences(of: "peer: 127.0.0.1:7001\n  client", with: "peer: 0.0.0.0:7001\n  client")
        let found = try problems(yaml, checkFiles: false)
        #expect(found.contains("members: id 2 is listed more than once"))
        #expect(found.contains("members: peer address 127.0.0.1:7002 is used by more than one member"))
        #expect(
            found.contains("listen.peer binds to 0.0.0.0:7001; set advertise.peer to the address other members use"))
    }
}

extension NodeConfigTests {
    /// The health listener is plain HTTP: loopback unless the config says otherwise (F9).
    @Test func aHealthListenerOffLoopbackMustBeAllowedExplicitly() throws {
        let exposed = validConfig.replacingOccurrences(of: "127.0.0.1:7301", with: "0.0.0.0:7301")
        #expect(
            try problems(exposed, checkFiles: false).contains {
                $0.hasPrefix("listen.health: 0.0.0.0:7301 is not a loopback address")
            })
        #expect(try problems(exposed + "\nhealth:\n  allow_non_loopback: true\n", checkFiles: false).isEmpty)
    }

    /// Session and connection limits are checked like the others.
    @Test func connectionAndSessionLimitsAreChecked() throws {
        let yaml =
            validConfig
            + "\nlimits:\n  max_sessions: 10\n  max_sessions_per_client: 11\nconnections:\n  max_per_listener: 8\n  first_request_ms: 10\n"
        let found = try problems(yaml, checkFiles: false)
        #expect(
            found.contains { $0.hasPrefix("limits.max_sessions_per_client: 11 must be 1 to limits.max_sessions (10)") })
        #expect(found.contains { $0.hasPrefix("connections.max_per_listener: 8 is outside") })
        #expect(found.contains { $0.hasPrefix("connections.first_request_ms: 10 is outside") })
    }
}

@Suite struct ExampleConfigTests {
    /// The example configs in cluster/examples parse and agree with themselves (their files are
    /// on other hosts, so only the files check is skipped).
    @Test(arguments: [
        "three-hosts/node-1", "three-hosts/node-2", "three-hosts/node-3", "five-hosts/node-1", "five-hosts/node-5",
    ])
    func exampleConfigIsValid(_ name: String) throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("cluster/examples/\(name).yaml").path
        let config = try NodeConfig.load(path: path, checkFiles: false)
        #expect(config.members.count == (name.hasPrefix("five") ? 5 : 3))
        #expect(config.selfEndpoints.peer == config.advertise?.peer)
    }
}
