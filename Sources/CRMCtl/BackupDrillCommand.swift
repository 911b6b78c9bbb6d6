import ArgumentParser
import Backup
import CRMClient
import CRMProto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension BackupCommand {
    /// `crmctl backup drill [ID]`: proves a backup restores. On this host, in a scratch
    /// directory: the backup is pulled from the member that holds it (and deep-verified by the
    /// restore), restored by `crm-node --restore-from` into a member of its own (a new master key,
    /// free ports on 127.0.0.1, alone), which is started; `crm check` and `audit verify` run on it,
    /// and its record, subject-key and audit counts must be the manifest's. The member is stopped
    /// and the directory removed; the result is recorded on the leader (audited, and exported as
    /// crm_backup_drill_last_success_timestamp_seconds). Run it weekly.
    struct Drill: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restore a backup into a scratch member on this host, start and check it, then remove it.",
            discussion:
                "The scratch member takes --node-config's id, TLS files, admins, CRM key and backup key (run it on a member's host); it never joins the cluster. Exit 1 naming the first failure; either way the result is recorded on the leader."
        )
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The backup id (default: the newest in any member's targets).") var id: String?
        @Option(help: "A member's config on this host.") var nodeConfig: String
        @Option(help: "The crm-node executable (default: the one beside crmctl).") var crmNode: String?
        @Option(help: "Where to work (default: a new directory under the temporary directory); removed after.")
        var scratch: String?

        func run() async throws {
            let cluster = try Cluster(options)
            defer { cluster.close() }
            let (info, index) = try await chooseBackup(cluster)
            let started = Date()
            let directory = scratch ?? NSTemporaryDirectory() + "crm-drill-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let outcome: Result<String, Error>
            do {
                outcome = .success(try await drill(info, from: index, in: directory, cluster))
            } catch {
                outcome = .failure(error)
            }
            let milliseconds = UInt64(Date().timeIntervalSince(started) * 1000)
            var record = Crm_V1_RecordBackupDrillRequest()
            record.backupID = info.id
            record.durationMs = milliseconds
            switch outcome {
            case .success(let detail):
                record.passed = true
                record.detail = detail
            case .failure(let error):
                record.detail = String("\(error)".prefix(1024))
            }
            let sent = record
            _ = try await cluster.onLeader { try await $0.admin.recordBackupDrill(sent, options: cluster.callOptions) }
            switch outcome {
            case .success(let detail):
                Swift.print("backup \(info.id) passed its restore drill in \(milliseconds) ms: \(detail)")
            case .failure(let error):
                throw Failure.refused("backup \(info.id) failed its restore drill: \(error)")
            }
        }

        /// The backup asked for (or the newest) and the member that holds it.
        private func chooseBackup(_ cluster: Cluster) async throws -> (Crm_V1_BackupInfo, Int) {
            var found: [(Crm_V1_BackupInfo, Int)] = []
            for index in cluster.targets.indices {
                let listed = try? await cluster.onTarget(index) {
                    try await $0.admin.listBackups(.init(), options: cluster.callOptions)
                }
                found += (listed?.backups ?? []).map { ($0, index) }
            }
            let chosen =
                id.map { id in found.first { $0.0.id == id } }
                ?? found.max { ($0.0.createdAtMs, $0.0.id) < ($1.0.createdAtMs, $1.0.id) }
            guard let chosen else { throw Failure.refused(id.map { "no member holds backup \($0)" } ?? "no backups") }
            return chosen
        }

        /// The drill itself; answers what it checked, or throws the first failure.
        private func drill(
            _ info: Crm_V1_BackupInfo, from index: Int, in directory: String, _ cluster: Cluster
        ) async throws -> String {
            guard let id = BackupID(info.id) else {
                throw Failure.refused("a listed backup id \(info.id) is malformed")
            }
            let backup = try await BackupCommand.pull(id, from: index, into: directory + "/backups", cluster)
            let node = crmNode ?? Self.besideThisTool("crm-node")
            let member = directory + "/member"
            let made = try Self.tool(node, ["--config", nodeConfig, "--drill-directory", member])
            guard made.status == 0,
                let admin = made.output.components(separatedBy: ", admin ").last?
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            else { throw Failure.refused("crm-node could not make the drill member's config: \(made.errors)") }
            let config = member + "/node.yaml"
            let restored = try Self.tool(node, ["--config", config, "--restore-from", backup])
            guard restored.status == 0 else {
                throw Failure.refused("the restore failed: \(restored.errors.suffix(600))")
            }
            let child = try Self.start(node, ["--config", config], log: member + "/node.log")
            defer { Self.stop(child) }
            var direct = options
            direct.endpoint = admin
            (direct.ca, direct.cert, direct.key) = (
                cluster.tlsFiles.ca, cluster.tlsFiles.certificate, cluster.tlsFiles.privateKey
            )
            let restoredMember = try Cluster(direct)
            defer { restoredMember.close() }
            let check = try await Self.checkWhenServing(restoredMember)
            guard check.problems.isEmpty else {
                throw Failure.refused("crm check found \(check.problems.count) problems: \(check.problems.prefix(3))")
            }
            let entities = info.counts.filter { !["kv_values", "audit_entries", "subject_keys"].contains($0.key) }
            let records = entities.values.reduce(0, +)
            guard check.records == records, check.subjectKeys == info.counts["subject_keys"] ?? 0 else {
                throw Failure.refused(
                    "the restored member holds \(check.records) records and \(check.subjectKeys) subject keys; the manifest says \(records) and \(info.counts["subject_keys"] ?? 0)"
                )
            }
            let audit = try await Audit.verify(restoredMember, 0, from: 1)
            guard audit.problem == nil, audit.head == info.auditHeadSeq + 1 else {
                throw Failure.refused(
                    "audit verify on the restored member: \(audit.problem ?? "head \(audit.head), expected \(info.auditHeadSeq + 1) (the backup's and the restore's entry)")"
                )
            }
            return
                "restored index \(info.appliedIndex), \(records) records, \(check.subjectKeys) subject keys, crm check clean, audit chain of \(audit.checked) entries holds to the restore's entry"
        }

        /// `crm check` on the drill member, once it serves (it opens and elects itself first).
        private static func checkWhenServing(_ member: Cluster) async throws -> Crm_V1_CRMCheckResponse {
            var last: Error?
            for _ in 0..<120 {
                do {
                    return try await member.onTarget(0) {
                        try await $0.admin.crmCheck(Crm_V1_CRMCheckRequest(), options: member.callOptions)
                    }
                } catch {
                    last = error
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            throw Failure.refused("the restored member did not serve within 60 s: \(last.map { "\($0)" } ?? "")")
        }

        static func besideThisTool(_ name: String) -> String {
            let path =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            return (path as NSString).deletingLastPathComponent + "/" + name
        }

        static func tool(
            _ path: String, _ arguments: [String]
        ) throws -> (status: Int32, output: String, errors: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            let (output, errors) = (Pipe(), Pipe())
            process.standardOutput = output
            process.standardError = errors
            try process.run()
            let out = output.fileHandleForReading.readDataToEndOfFile()
            let err = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (
                process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self)
            )
        }

        /// Starts the drill member; it exits with this process if this process dies first.
        static func start(_ path: String, _ arguments: [String], log: String) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment
            environment["CRM_EXIT_WITH_PARENT"] = "\(getpid())"
            process.environment = environment
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return process
        }

        /// SIGTERM, then SIGKILL after 10 s.
        static func stop(_ process: Process) {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGTERM)
            for _ in 0..<100 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }
}
