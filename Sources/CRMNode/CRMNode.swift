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
        do {
            let report = try BackupRestore.run(
                config: config, backup: backup, backupKeyFile: keyFile, logger: logger)
            print(
                "crm-node: restored backup \(report.manifest.backupID) (index \(report.manifest.appliedIndex), "
                    + "\(report.records) records) into \(config.dataDir) in \(String(format: "%.2f", report.seconds)) s"
            )
        } catch {
            FileHandle.standardError.write(Data("crm-node: restore refused: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
