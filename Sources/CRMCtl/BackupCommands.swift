import ArgumentParser
import Backup
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// `crmctl backup create|list|verify`: logical backups in the members' backup targets.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Encrypted, signed logical backups in the members' backup targets.",
        subcommands: [Create.self, List.self, Verify.self, Pull.self, Drill.self])

    /// Backups take longer than other calls: this long at least.
    static func longCall(_ cluster: Cluster) -> CallOptions {
        var options = cluster.callOptions
        options.timeout = .seconds(max(Int64(cluster.timeout), 900))
        return options
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a backup now on the leader (or --member), into its targets.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let call = BackupCommand.longCall(cluster)
            let info = try await cluster.onLeader { try await $0.admin.createBackup(.init(), options: call) }
            try BackupCommand.print([info], json: options.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The backups in every member's targets.")
        @OptionGroup var options: ConnectionOptions
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            var backups: [Crm_V1_BackupInfo] = []
            var partial: [String] = []
            for index in cluster.targets.indices {
                let listed = try await cluster.onTarget(index) {
                    try await $0.admin.listBackups(.init(), options: cluster.callOptions)
                }
                backups += listed.backups
                partial += listed.partial.map { "member \(cluster.targets[index].id): \($0)" }
            }
            try BackupCommand.print(
                backups.sorted { ($0.createdAtMs, $0.id) < ($1.createdAtMs, $1.id) }, json: options.json)
            if !partial.isEmpty, !options.json {
                Swift.print("interrupted (never usable, safe to remove):\n  " + partial.joined(separator: "\n  "))
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a backup on the member that holds it; exit 1 naming the first failure.",
            discussion:
                "Quick: the manifest's signature (a member certificate from the cluster CA), its MAC under the backup's data key (which the backup key must unwrap), every chunk's size and hash. --deep also opens and decodes every chunk, recounts the records, recomputes the content digest and re-hashes the archived audit trail."
        )
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The backup id (32 hexadecimal characters).") var id: String
        @Flag(help: "Open and decode everything, not only the files' hashes.") var deep = false
        @Option(help: "Verify the copy in this directory on this host (deep) instead, with --backup-key.")
        var dir: String?
        @Option(help: "The backup key file (with --dir).") var backupKey: String?
        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            if let dir {
                guard let backupKey else { throw Failure.usage("--dir needs --backup-key") }
                return try BackupCommand.verifyHere(dir + "/" + id, keyFile: backupKey, caFile: cluster.caFile)
            }
            guard let index = await BackupCommand.holder(of: id, cluster) else {
                throw Failure.refused("no member holds backup \(id)")
            }
            var request = Crm_V1_VerifyBackupRequest()
            request.id = id
            request.deep = deep
            let (sent, call) = (request, BackupCommand.longCall(cluster))
            let result = try await cluster.onTarget(index) { try await $0.admin.verifyBackup(sent, options: call) }
            let member = cluster.targets[index].id
            if options.json {
                try Output.json(
                    VerifyJSON(
                        id: id, member: member, deep: deep, problem: result.problem, chunks: result.chunks,
                        records: result.records, audit_entries: result.auditEntries, duration_ms: result.durationMs))
            } else if result.problem.isEmpty {
                Swift.print(
                    "backup \(id) on member \(member) holds (\(deep ? "deep" : "quick")): \(result.chunks) chunks"
                        + (deep ? ", \(result.records) records, \(result.auditEntries) audit entries" : "")
                        + " in \(result.durationMs) ms")
            }
            guard result.problem.isEmpty else {
                throw Failure.refused("backup \(id) on member \(member): \(result.problem)")
            }
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a backup from the member that holds it into a directory on this host (3-2-1).",
            discussion:
                "The copy is written into DIR/.partial-<id> and renamed to DIR/<id> once its manifest is whole. With --backup-key it is then verified here (deep) against the cluster CA."
        )
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The backup id (32 hexadecimal characters).") var id: String
        @Option(help: "The directory to copy it into.") var to: String
        @Option(help: "The backup key file: verify the copy (deep) once it is here.") var backupKey: String?

        func run() async throws {
            guard let backup = BackupID(id) else {
                throw Failure.usage("a backup id is 32 lower-case hexadecimal characters")
            }
            let cluster = try Cluster(options)
            defer { cluster.close() }
            guard let index = await BackupCommand.holder(of: id, cluster) else {
                throw Failure.refused("no member holds backup \(id)")
            }
            let started = Date()
            let path = try await BackupCommand.pull(backup, from: index, into: to, cluster)
            Swift.print(
                "backup \(id) copied from member \(cluster.targets[index].id) into \(path) in "
                    + String(format: "%.2f s", Date().timeIntervalSince(started)))
            guard let backupKey else { return }
            try BackupCommand.verifyHere(path, keyFile: backupKey, caFile: cluster.caFile)
        }
    }

    /// Copies backup `id` from the member at `index` into `directory`; answers its path there.
    static func pull(_ id: BackupID, from index: Int, into directory: String, _ cluster: Cluster) async throws -> String
    {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var request = Crm_V1_PullBackupRequest()
        request.id = id.description
        let (sent, call) = (request, BackupCommand.longCall(cluster))
        return try await cluster.onTarget(index) { connection in
            try await connection.admin.pullBackup(sent, options: call) { response in
                let receiver = try BackupReceiver(target: directory, id: id)
                do {
                    for try await piece in response.messages {
                        try receiver.add(
                            piece.file, offset: piece.offset, Array(piece.data), fileBytes: piece.fileBytes)
                    }
                    return try receiver.finish()
                } catch {
                    receiver.abandon()
                    throw error
                }
            }
        }
    }

    /// The index of the first member that lists backup `id`.
    static func holder(of id: String, _ cluster: Cluster) async -> Int? {
        for index in cluster.targets.indices {
            let listed = try? await cluster.onTarget(index) {
                try await $0.admin.listBackups(.init(), options: cluster.callOptions)
            }
            if listed?.backups.contains(where: { $0.id == id }) == true { return index }
        }
        return nil
    }

    /// A deep verify of a copy on this host; exit 1 naming the failure.
    static func verifyHere(_ path: String, keyFile: String, caFile: String) throws {
        let ca = Array(FileManager.default.contents(atPath: caFile) ?? Data())
        do {
            let report = try BackupVerifier(directory: path, keyFile: keyFile, caPEM: ca).verify(deep: true)
            Swift.print(
                "\(path) holds (deep): \(report.chunks) chunks, \(report.records) records, \(report.auditEntries) audit entries"
            )
        } catch {
            throw Failure.refused("\(path): \(error)")
        }
    }

    struct VerifyJSON: Encodable {
        let id: String
        let member: UInt64
        let deep: Bool
        let problem: String
        let chunks: UInt64
        let records: UInt64
        let audit_entries: UInt64
        let duration_ms: UInt64
    }

    struct BackupJSON: Encodable {
        let id: String
        let target: String
        let member: UInt64
        let applied_index: UInt64
        let term: UInt64
        let created_at_ms: UInt64
        let bytes: UInt64
        let counts: [String: UInt64]
        let content_digest: String
        let audit_head_seq: UInt64
        let duration_ms: UInt64
        let problem: String
    }

    static func print(_ backups: [Crm_V1_BackupInfo], json: Bool) throws {
        if json {
            try Output.json(
                backups.map {
                    BackupJSON(
                        id: $0.id, target: $0.target, member: $0.memberID, applied_index: $0.appliedIndex,
                        term: $0.term, created_at_ms: $0.createdAtMs, bytes: $0.bytes, counts: $0.counts,
                        content_digest: $0.contentDigest, audit_head_seq: $0.auditHeadSeq, duration_ms: $0.durationMs,
                        problem: $0.problem)
                })
            return
        }
        Output.table(
            ["ID", "TAKEN BY", "INDEX", "CREATED", "BYTES", "RECORDS", "TARGET", "PROBLEM"],
            backups.map { info in
                let records = info.counts.filter { !["kv_values", "audit_entries", "subject_keys"].contains($0.key) }
                    .values.reduce(0, +)
                return [
                    info.id, "member \(info.memberID)", "\(info.appliedIndex)",
                    ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(info.createdAtMs) / 1000)),
                    "\(info.bytes)", "\(records)", info.target, info.problem,
                ]
            })
    }
}
