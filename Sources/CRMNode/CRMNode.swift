import ArgumentParser
import Foundation
import Logging
import Node

/// crm-node: one member of a CRM cluster.
@main
struct CRMNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crm-node",
        abstract: "Runs one member of a CRM cluster: Raft-replicated, encrypted storage behind mutual-TLS APIs.",
        discussion: """
            The config file (YAML) is described in the README's operations guide; cluster/ has examples. \
            SIGTERM or SIGINT shuts the member down gracefully: if it leads, it first hands leadership to a \
            caught-up voter.
            """
    )

    @Option(help: "The member's configuration file.")
    var config: String

    @Flag(help: "Check the configuration and exit (0: valid).")
    var check = false

    @Option(
        help: ArgumentHelp(
            "Restore this backup directory into the config's data_dir (which must not exist or be empty), then exit.",
            discussion: "The backup is deep-verified first; the restored member is its cluster's only voter."))
    var restoreFrom: String?

    @Option(help: "The backup key for --restore-from (default: the config's backup.key_file).")
    var backupKey: String?

    @Option(
        help: ArgumentHelp(
            "With --restore-from: replay the log segments after the backup up to this log index.",
            discussion: "Segments are read from the backup's own target and the config's backup.targets."))
    var toIndex: UInt64?

    @Option(
        name: .customLong("segments"),
        help:
            "With --to-index or --to-time: another backup target to read log segments from (repeatable; each member's leader term writes into its own targets)."
    )
    var segmentDirectories: [String] = []

    @Option(
        help:
            "With --restore-from: replay the log segments up to the last entry proposed at or before this time (ISO 8601, e.g. 2026-12-06T12:00:00Z, or Unix milliseconds)."
    )
    var toTime: String?

    @Option(
        help: ArgumentHelp(
            "Write the config of a restore drill's member into this directory (as node.yaml, with its own master key), then exit.",
            discussion:
                "This member's id, TLS files, admins, CRM key and backup key; its own data directory; free ports on 127.0.0.1; alone. `crmctl backup drill` restores a backup into it and starts it."
        ))
    var drillDirectory: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["CRM_LOG_LEVEL"] ?? "info"

    func run() async throws {
        let nodeConfig: NodeConfig
        do {
            nodeConfig = try NodeConfig.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("crm-node: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if check {
            print("crm-node: \(config) is valid (member \(nodeConfig.id) of \(nodeConfig.members.count))")
            return
        }
        if let drillDirectory {
            do {
                let drill = try nodeConfig.drillMember(directory: drillDirectory)
                try drill.yaml().write(toFile: drillDirectory + "/node.yaml", atomically: true, encoding: .utf8)
                print("crm-node: drill member config \(drillDirectory)/node.yaml, admin \(drill.listen.admin)")
            } catch {
                FileHandle.standardError.write(Data("crm-node: drill config: \(error)\n".utf8))
                throw ExitCode(1)
            }
            return
        }
        guard let level = Logger.Level(rawValue: logLevel) else {
            FileHandle.standardError.write(Data("crm-node: unknown log level '\(logLevel)'\n".utf8))
            throw ExitCode(2)
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "crm.node")
        logger[metadataKey: "node"] = "\(nodeConfig.id)"
        if let restoreFrom {
            try restore(restoreFrom, nodeConfig, logger)
            return
        }
        ProcessHardening.exitWithParentIfAsked()
        ProcessHardening.apply(logger: logger)
        do {
            try await NodeRuntime(config: nodeConfig, logger: logger).run(gracefulShutdownSignals: [.sigterm, .sigint])
        } catch {
            logger.critical("member failed", metadata: ["error": "\(error)"])
            FileHandle.standardError.write(Data("crm-node: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// `--restore-from`: the backup into the data directory, offline; 0 when restored.
    private func restore(_ backup: String, _ config: NodeConfig, _ logger: Logger) throws {
        guard let keyFile = backupKey ?? config.backup?.keyFile else {
            FileHandle.standardError.write(
                Data("crm-node: --restore-from needs --backup-key or backup.key_file\n".utf8))
            throw ExitCode(2)
        }
        let point: BackupRestore.Point
        switch (toIndex, toTime) {
        case (nil, nil): point = .backup
        case (let index?, nil): point = .index(index)
        case (nil, let text?):
            guard let millis = Self.millis(text) else {
                FileHandle.standardError.write(
                    Data("crm-node: --to-time \(text) is neither ISO 8601 nor milliseconds\n".utf8))
                throw ExitCode(2)
            }
            point = .time(millis: millis)
        case (.some, .some):
            FileHandle.standardError.write(Data("crm-node: give --to-index or --to-time, not both\n".utf8))
            throw ExitCode(2)
        }
        let standardized = URL(fileURLWithPath: backup).standardizedFileURL.path
        let segmentTargets =
            [(standardized as NSString).deletingLastPathComponent] + (config.backup?.targets ?? []) + segmentDirectories
        do {
            let report = try BackupRestore.run(
                config: config, backup: backup, backupKeyFile: keyFile, to: point, segmentTargets: segmentTargets,
                logger: logger)
            print(
                "crm-node: restored backup \(report.manifest.backupID) (index \(report.manifest.appliedIndex), "
                    + "\(report.records) records) into \(config.dataDir) in \(String(format: "%.2f", report.seconds)) s"
            )
            if point != .backup {
                print(
                    "crm-node: replayed \(report.replayedEntries) log entries: restored to index \(report.index), log time \(report.logTimeMillis) ms, content digest \(report.contentDigest)"
                )
            }
        } catch {
            FileHandle.standardError.write(Data("crm-node: restore refused: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// `--to-time`: ISO 8601 (with a zone) or Unix milliseconds.
    static func millis(_ text: String) -> UInt64? {
        if let millis = UInt64(text) { return millis }
        let formatter = ISO8601DateFormatter()
        guard let date = formatter.date(from: text), date.timeIntervalSince1970 >= 0 else { return nil }
        return UInt64(date.timeIntervalSince1970 * 1000)
    }
}
