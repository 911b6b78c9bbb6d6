import Foundation
import Identity
import Raft
import Sealing
import Transport
import Yams

/// Everything wrong with a config file, one line each, naming the key and the fix.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var problems: [String]

    public var description: String {
        "\(path): \(problems.count == 1 ? "1 problem" : "\(problems.count) problems")\n"
            + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

extension NodeConfig {
    /// Reads, checks and resolves the config at `path`: relative file paths are taken relative
    /// to the file's directory. Throws `ConfigError` listing every problem found.
    public static func load(path: String, checkFiles: Bool = true) throws -> NodeConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(
                path: path,
                problems: ["cannot read the file (\(error.localizedDescription)); pass the right path with --config"])
        }
        var config = try parse(text, path: path)
        config.resolvePaths(relativeTo: URL(fileURLWithPath: path).deletingLastPathComponent().path)
        let problems = config.problems(checkFiles: checkFiles)
        guard problems.isEmpty else { throw ConfigError(path: path, problems: problems) }
        return config
    }

    /// The config as YAML that `load` reads back as the same value (the harness writes every
    /// test and drill member's config this way, so a renamed key cannot drift from the loader).
    public func yaml() throws -> String {
        try YAMLEncoder().encode(self)
    }

    /// Parses YAML, refusing unknown keys (a misspelt key would otherwise be ignored silently).
    static func parse(_ text: String, path: String) throws -> NodeConfig {
        let root: Yams.Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError(path: path, problems: ["not valid YAML: \(error)"])
        }
        guard let root, root.mapping != nil else {
            throw ConfigError(path: path, problems: ["the file is empty or not a YAML mapping"])
        }
        let unknown = unknownKeys(in: root, schema: .config, at: "")
        if !unknown.isEmpty { throw ConfigError(path: path, problems: unknown) }
        do {
            return try YAMLDecoder().decode(NodeConfig.self, from: text)
        } catch let error as DecodingError {
            throw ConfigError(path: path, problems: [describe(error)])
        } catch {
            throw ConfigError(path: path, problems: ["\(error)"])
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func key(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(
                of: ".[", with: "[")
        }
        switch error {
        case .keyNotFound(let missing, let context):
            let place = key(context.codingPath + [missing])
            return "\(place): missing; add it (see cluster/examples/three-hosts/node-1.yaml)"
        case .typeMismatch(let type, let context):
            return "\(key(context.codingPath)): expected \(type == String.self ? "text" : "\(type)")"
        case .valueNotFound(_, let context):
            return "\(key(context.codingPath)): has no value"
        case .dataCorrupted(let context):
            return "\(key(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    /// The keys each mapping may hold.
    indirect enum Schema: Sendable {
        case mapping([String: Schema])
        case list(Schema)
        case scalar

        static let endpoints: Schema = .mapping(["id": .scalar, "peer": .scalar, "client": .scalar, "admin": .scalar])
        static let config: Schema = .mapping([
            "id": .scalar, "data_dir": .scalar, "master_key_file": .scalar, "join": .scalar,
            "listen": .mapping(["peer": .scalar, "client": .scalar, "admin": .scalar, "health": .scalar]),
            "advertise": .mapping(["peer": .scalar, "client": .scalar, "admin": .scalar]),
            "members": .list(endpoints),
            "tls": .mapping([
                "ca": .scalar, "cert": .scalar, "key": .scalar, "reload_interval_seconds": .scalar,
                "deny_file": .scalar,
            ]),
            "admins": .list(.scalar),
            "timing": .mapping([
                "tick_ms": .scalar, "election_ticks": .scalar, "heartbeat_ticks": .scalar,
                "request_timeout_ms": .scalar, "shutdown_handoff_ms": .scalar,
            ]),
            "limits": .mapping([
                "max_message_bytes": .scalar, "max_send_queue_bytes": .scalar,
                "snapshot_every_entries": .scalar, "max_sessions": .scalar, "max_sessions_per_client": .scalar,
            ]),
            "health": .mapping([
                "check_interval_ms": .scalar, "disk_reserve_bytes": .scalar, "storage_quota_bytes": .scalar,
                "fsync_slow_ms": .scalar, "fsync_window_ms": .scalar, "max_apply_lag": .scalar,
                "stall_ms": .scalar, "verify_interval_hours": .scalar, "allow_non_loopback": .scalar,
            ]),
            "backup": .mapping([
                "targets": .list(.scalar), "key_file": .scalar, "every_hours": .scalar, "keep_days": .scalar,
                "archive_seconds": .scalar, "max_archive_lag_entries": .scalar,
            ]),
            "failover": .mapping([
                "hand_off_on_disk_failure": .scalar, "dead_after_seconds": .scalar, "auto_replace": .scalar,
                "spares": .list(endpoints), "min_voters": .scalar,
            ]),
            "front": .mapping([
                "grpc": .scalar, "http": .scalar, "requests_per_second": .scalar, "burst": .scalar,
                "request_timeout_ms": .scalar, "drain_ms": .scalar, "poll_ms": .scalar,
            ]),
            "crm": .mapping([
                "key_file": .scalar, "rewrap_batches_per_second": .scalar, "audit_reads": .scalar, "mfa": .scalar,
                "audit_checkpoint_seconds": .scalar, "geo_file": .scalar, "max_subjects_per_hour": .scalar,
                "auth_attack_failures_per_minute": .scalar, "isolate_clients": .scalar,
                "history_retention_days": .scalar, "audit_queue_entries": .scalar,
            ]),
            "connections": .mapping([
                "max_per_listener": .scalar, "max_per_address": .scalar, "first_request_ms": .scalar,
                "idle_ms": .scalar, "request_read_ms": .scalar, "max_concurrent_streams": .scalar,
                "max_age_s": .scalar,
            ]),
        ])
    }

    private static func unknownKeys(in node: Yams.Node, schema: Schema, at place: String) -> [String] {
        switch (schema, node) {
        case (.mapping(let keys), .mapping(let mapping)):
            var problems: [String] = []
            for (key, value) in mapping {
                let name = key.string ?? "\(key)"
                let here = place.isEmpty ? name : "\(place).\(name)"
                guard let child = keys[name] else {
                    let known = keys.keys.sorted().joined(separator: ", ")
                    problems.append("\(here): unknown key; the keys here are \(known)")
                    continue
                }
                problems += unknownKeys(in: value, schema: child, at: here)
            }
            return problems
        case (.list(let element), .sequence(let sequence)):
            return sequence.enumerated().flatMap {
                unknownKeys(in: $0.element, schema: element, at: "\(place)[\($0.offset)]")
            }
        default:
            return [] // type mismatches are reported by the decoder
        }
    }

    mutating func resolvePaths(relativeTo directory: String) {
        func resolve(_ path: String) -> String {
            path.hasPrefix("/") ? path : URL(fileURLWithPath: directory).appendingPathComponent(path).standardized.path
        }
        dataDir = resolve(dataDir)
        masterKeyFile = resolve(masterKeyFile)
        tls.ca = resolve(tls.ca)
        tls.cert = resolve(tls.cert)
        tls.key = resolve(tls.key)
        tls.denyFile = tls.denyFile.map(resolve)
        if let keyFile = crm?.keyFile { crm?.keyFile = resolve(keyFile) }
        if let given = backup {
            backup?.targets = given.targets.map(resolve)
            backup?.keyFile = resolve(given.keyFile)
        }
    }

    /// Every inconsistency, one line each.
    func problems(checkFiles: Bool) -> [String] {
        var problems: [String] = []
        if id == 0 { problems.append("id: must be a positive integer; each member of a cluster has its own") }
        problems += memberProblems()
        problems += endpointProblems()
        problems += timingProblems()
        problems += limitProblems()
        problems += healthProblems()
        for name in admins ?? [] where !PeerIdentity.isValidClientName(name) {
            problems.append(
                "admins: '\(name)' is not a client name (letters, digits, '.', '_', '-'); it must match a client certificate's crm://client/<name>"
            )
        }
        if checkFiles { problems += fileProblems() }
        return problems
    }

    private func memberProblems() -> [String] {
        var problems: [String] = []
        if members.isEmpty { problems.append("members: empty; list every founding voter, this member included") }
        let ids = members.map(\.id)
        for duplicate in Set(ids.filter { id in ids.filter { $0 == id }.count > 1 }).sorted() {
            problems.append("members: id \(duplicate) is listed more than once")
        }
        if ids.contains(0) { problems.append("members: id 0 is reserved; use positive ids") }
        if id != 0 && !ids.contains(id) {
            problems.append(
                "members: this member (id \(id)) is not listed; add its own entry with its peer, client and admin addresses"
            )
        }
        let peers = members.map(\.peer)
        for duplicate in Set(peers.filter { peer in peers.filter { $0 == peer }.count > 1 }) {
            problems.append("members: peer address \(duplicate) is used by more than one member")
        }
        for member in members where member.peer.isWildcard || member.client.isWildcard || member.admin.isWildcard {
            problems.append("members[id \(member.id)]: addresses must be reachable ones, not 0.0.0.0 or ::")
        }
        if let own = members.first(where: { $0.id == id }) {
            let peer = advertise?.peer ?? listen.peer
            if own.peer != peer {
                problems.append(
                    "members[id \(id)].peer is \(own.peer) but this member is reached at \(peer) (advertise.peer, or listen.peer); make them agree"
                )
            }
        }
        return problems
    }

    private func endpointProblems() -> [String] {
        var problems: [String] = []
        var listeners = [
            ("peer", listen.peer), ("client", listen.client), ("admin", listen.admin), ("health", listen.health),
        ]
        if let front { listeners += [("front.grpc", front.grpc), ("front.http", front.http)] }
        for (name, endpoint) in listeners where endpoint.port == 0 {
            problems.append(
                "\(name.hasPrefix("front") ? name : "listen.\(name)"): port 0; give a fixed port so that members and clients can find it"
            )
        }
        for (index, first) in listeners.enumerated() {
            for second in listeners[(index + 1)...] where first.1 == second.1 {
                problems.append(
                    "listen.\(first.0) and listen.\(second.0) are both \(first.1); each listener needs its own port")
            }
        }
        for (name, endpoint) in [("peer", advertise?.peer), ("client", advertise?.client), ("admin", advertise?.admin)]
        {
            if let endpoint, endpoint.isWildcard {
                problems.append("advertise.\(name): \(endpoint) cannot be dialled; give this host's address")
            }
        }
        let loopback =
            listen.health.host == "localhost" || listen.health.host == "::1" || listen.health.host.hasPrefix("127.")
        if !loopback && health?.allowNonLoopback != true {
            problems.append(
                "listen.health: \(listen.health) is not a loopback address; the health listener is plain HTTP without authentication, so bind it to 127.0.0.1, or set health.allow_non_loopback: true and keep it on a monitoring network"
            )
        }
        if advertise?.peer == nil && listen.peer.isWildcard {
            problems.append("listen.peer binds to \(listen.peer); set advertise.peer to the address other members use")
        }
        return problems
    }

    private func timingProblems() -> [String] {
        var problems: [String] = []
        if !(10...10_000).contains(tickMilliseconds) {
            problems.append("timing.tick_ms: \(tickMilliseconds) is outside 10–10000")
        }
        if heartbeatTicks < 1 { problems.append("timing.heartbeat_ticks: must be at least 1") }
        if electionTicks < 2 * max(heartbeatTicks, 1) {
            problems.append(
                "timing.election_ticks (\(electionTicks)) must be at least twice timing.heartbeat_ticks (\(heartbeatTicks)), or followers campaign between heartbeats"
            )
        }
        if requestTimeoutMilliseconds < 2 * tickMilliseconds * electionTicks {
            problems.append(
                "timing.request_timeout_ms (\(requestTimeoutMilliseconds)) should cover two election timeouts (\(2 * tickMilliseconds * electionTicks) ms) so that requests survive a leader change"
            )
        }
        if shutdownHandoffMilliseconds < 0 { problems.append("timing.shutdown_handoff_ms: must not be negative") }
        return problems
    }

    private func limitProblems() -> [String] {
        var problems: [String] = []
        if maxMessageBytes > 256 << 20 {
            problems.append("limits.max_message_bytes: \(maxMessageBytes) is over 256 MiB")
        }
        problems += MemberLimits(config: self).problems
        if snapshotEveryEntries < 100 { problems.append("limits.snapshot_every_entries: at least 100") }
        if maxSessions < 1 { problems.append("limits.max_sessions: at least 1") }
        if !(1...max(maxSessions, 1)).contains(maxSessionsPerClient) {
            problems.append(
                "limits.max_sessions_per_client: \(maxSessionsPerClient) must be 1 to limits.max_sessions (\(maxSessions))"
            )
        }
        if tlsReloadIntervalSeconds < 1 { problems.append("tls.reload_interval_seconds: at least 1") }
        if let rate = crm?.rewrapBatchesPerSecond, !(1...1024).contains(rate) {
            problems.append("crm.rewrap_batches_per_second: \(rate) is outside 1–1024")
        }
        if let seconds = crm?.auditCheckpointSeconds, !(1...3600).contains(seconds) {
            problems.append("crm.audit_checkpoint_seconds: \(seconds) is outside 1–3600")
        }
        if let subjects = crm?.maxSubjectsPerHour, !(1...1_000_000).contains(subjects) {
            problems.append("crm.max_subjects_per_hour: \(subjects) is outside 1–1000000")
        }
        if let days = crm?.historyRetentionDays, !(1...36_500).contains(days) {
            problems.append("crm.history_retention_days: \(days) is outside 1–36500")
        }
        if let backup {
            if !(1...8).contains(backup.targets.count) { problems.append("backup.targets: 1 to 8 directories") }
            if Set(backup.targets).count != backup.targets.count {
                problems.append("backup.targets: a directory twice")
            }
            if let hours = backup.everyHours, !(0...168).contains(hours) {
                problems.append("backup.every_hours: \(hours) is outside 0–168")
            }
            if let days = backup.keepDays, !(1...3650).contains(days) {
                problems.append("backup.keep_days: \(days) is outside 1–3650")
            }
            if let seconds = backup.archiveSeconds, seconds != 0, !(5...3600).contains(seconds) {
                problems.append("backup.archive_seconds: \(seconds) is neither 0 nor within 5–3600")
            }
            if let entries = backup.maxArchiveLagEntries, !(1000...10_000_000).contains(entries) {
                problems.append("backup.max_archive_lag_entries: \(entries) is outside 1000–10000000")
            }
        }
        if let entries = crm?.auditQueueEntries, !(100...1_000_000).contains(entries) {
            problems.append("crm.audit_queue_entries: \(entries) is outside 100–1000000")
        }
        if let failures = crm?.authAttackFailuresPerMinute, !(10...1_000_000).contains(failures) {
            problems.append("crm.auth_attack_failures_per_minute: \(failures) is outside 10–1000000")
        }
        if !(16...60_000).contains(maxConnectionsPerListener) {
            problems.append("connections.max_per_listener: \(maxConnectionsPerListener) is outside 16–60000")
        }
        if !(1...maxConnectionsPerListener).contains(maxConnectionsPerAddress) {
            problems.append(
                "connections.max_per_address: \(maxConnectionsPerAddress) must be 1 to connections.max_per_listener (\(maxConnectionsPerListener))"
            )
        }
        if !(100...60_000).contains(firstRequestMilliseconds) {
            problems.append("connections.first_request_ms: \(firstRequestMilliseconds) is outside 100–60000")
        }
        if connectionIdleMilliseconds < firstRequestMilliseconds {
            problems.append("connections.idle_ms must be at least connections.first_request_ms")
        }
        if !(100...600_000).contains(requestReadMilliseconds) {
            problems.append("connections.request_read_ms: \(requestReadMilliseconds) is outside 100–600000")
        }
        if !(1...65_536).contains(maxConcurrentStreams) {
            problems.append("connections.max_concurrent_streams: \(maxConcurrentStreams) is outside 1–65536")
        }
        if maxConnectionAgeSeconds < 60 { problems.append("connections.max_age_s: at least 60") }
        return problems
    }

    private func healthProblems() -> [String] {
        var problems: [String] = []
        if !(10...10_000).contains(healthCheckIntervalMilliseconds) {
            problems.append("health.check_interval_ms: \(healthCheckIntervalMilliseconds) is outside 10–10000")
        }
        if fsyncSlowMilliseconds < 1 { problems.append("health.fsync_slow_ms: at least 1") }
        if fsyncWindowMilliseconds < 2 * healthCheckIntervalMilliseconds {
            problems.append(
                "health.fsync_window_ms (\(fsyncWindowMilliseconds)) must cover at least two health checks (\(2 * healthCheckIntervalMilliseconds) ms)"
            )
        }
        if stallMilliseconds < tickMilliseconds {
            problems.append("health.stall_ms (\(stallMilliseconds)) must be at least one tick (\(tickMilliseconds) ms)")
        }
        if verifyIntervalHours < 0 { problems.append("health.verify_interval_hours: must not be negative") }
        if deadAfterSeconds < 1 { problems.append("failover.dead_after_seconds: at least 1") }
        if minVoters < 1 { problems.append("failover.min_voters: at least 1") }
        let memberIDs = Set(members.map(\.id))
        // A joining spare lists itself among the members; any other spare must not be a founder.
        for spare in spares where spare.id == 0 || (memberIDs.contains(spare.id) && !(join == true && spare.id == id)) {
            problems.append(
                "failover.spares: id \(spare.id) is already a founding member (or 0); a spare needs its own id")
        }
        if autoReplace && spares.isEmpty {
            problems.append("failover.auto_replace is on but failover.spares lists none; list the spare members")
        }
        if front != nil {
            if frontRequestsPerSecond <= 0 { problems.append("front.requests_per_second: must be positive") }
            if frontBurst < 1 { problems.append("front.burst: at least 1") }
            if frontRequestTimeoutMilliseconds < electionTimeoutMilliseconds * 2 {
                problems.append(
                    "front.request_timeout_ms (\(frontRequestTimeoutMilliseconds)) should cover two election timeouts (\(2 * electionTimeoutMilliseconds) ms) so that requests ride out a leader change"
                )
            }
            if frontDrainMilliseconds < 0 { problems.append("front.drain_ms: must not be negative") }
            if !(10...10_000).contains(frontPollMilliseconds) {
                problems.append("front.poll_ms: \(frontPollMilliseconds) is outside 10–10000")
            }
        }
        return problems
    }

    private func fileProblems() -> [String] {
        var problems: [String] = []
        let files = FileManager.default
        var needed = [
            ("tls.ca", tls.ca), ("tls.cert", tls.cert), ("tls.key", tls.key), ("master_key_file", masterKeyFile),
        ]
        if let crmKey = crm?.keyFile { needed.append(("crm.key_file", crmKey)) }
        for (key, path) in needed {
            guard files.isReadableFile(atPath: path) else {
                problems.append("\(key): \(path) does not exist or cannot be read; cluster/make-certs.sh creates it")
                continue
            }
            if key == "tls.key" || key == "master_key_file" || key == "crm.key_file" {
                // The same check the member makes when it reads the file (following links).
                do {
                    var bytes = try SecretFile.read(path, maxBytes: 64 << 10)
                    scrub(&bytes)
                } catch {
                    problems.append("\(key): \(error)")
                }
            }
        }
        if let denyFile = tls.denyFile {
            do { _ = try DenyList(path: denyFile) } catch { problems.append("tls.deny_file: \(error)") }
        }
        if let geoFile = crm?.geoFile {
            do { _ = try GeoTable.load(path: geoFile) } catch { problems.append("crm.geo_file: \(error)") }
        }
        var isDirectory: ObjCBool = false
        if files.fileExists(atPath: dataDir, isDirectory: &isDirectory) {
            if !isDirectory.boolValue {
                problems.append("data_dir: \(dataDir) is a file, not a directory")
            } else if !files.isWritableFile(atPath: dataDir) {
                problems.append("data_dir: \(dataDir) is not writable by this user")
            }
        } else {
            // It is created at start, with any missing parents: the nearest existing one must be writable.
            var ancestor = URL(fileURLWithPath: dataDir).deletingLastPathComponent()
            while !files.fileExists(atPath: ancestor.path) && ancestor.path != "/" {
                ancestor.deleteLastPathComponent()
            }
            if !files.isWritableFile(atPath: ancestor.path) {
                problems.append("data_dir: \(dataDir) does not exist and \(ancestor.path) is not writable; create it")
            }
        }
        return problems
    }
}
