import Backup
import CRMProto
import Foundation
import GRPCCore
import Sealing
import Synchronization

/// Backups on this member (`backup` in its config): taken from one view of its applied state
/// into the first target and copied to the others, listed and verified where they lie. One
/// backup at a time per member. Taking one is in the audit trail before it starts (a backup
/// carries every record, sealed).
extension AdminService {
    func createBackup(request: Crm_V1_CreateBackupRequest, context: ServerContext) async throws -> Crm_V1_BackupInfo {
        let admin = try authorization.requireAdmin(context)
        return try await takeBackup(by: Caller(identity: .client(admin)))
    }

    /// Takes a backup now (the operator's call, or the leader's schedule for `caller` the
    /// member); refused while another is being taken on this member.
    func takeBackup(by caller: Caller) async throws -> Crm_V1_BackupInfo {
        let settings = try backupSettings()
        let acquired = BackupGate.running.withLock { running -> Bool in
            guard !running else { return false }
            running = true
            return true
        }
        guard acquired else {
            throw RPCError(
                code: .failedPrecondition, message: "a backup is being taken on this member; try again later")
        }
        defer { BackupGate.running.withLock { $0 = false } }
        let id = try BackupID.random()
        let started = Date()
        let state = try engine.kv.pinState()
        let first = settings.targets[0]
        let origin = BackupWriter.Origin(
            member: engine.id, binaryVersion: NodeVersion.current, createdAtMillis: WallClock.nowMillis(),
            previous: BackupStore.list(first).backups.last?.id.description)
        var slowDisk = BackupWriter(kek: settings.kek, signer: settings.signer)
        if case let delay = FaultHooks.shared.backupChunkDelayMilliseconds, delay > 0 {
            slowDisk.beforeEachChunk = { usleep(UInt32(delay) * 1000) }
        }
        let writer = slowDisk
        let manifest = try await audited(
            "backup.create", by: caller, reason: "backup \(id) of member \(engine.id) at index \(state.position.index)"
        ) {
            try await offload {
                let manifest = try writer.write(state, id: id, origin: origin, into: first)
                for target in settings.targets.dropFirst() { try BackupStore.copy(id, from: first, to: target) }
                return manifest
            }
        }
        backupStatus.succeeded(at: manifest.createdAtMillis, index: manifest.appliedIndex)
        if config.archiveIntervalMillis > 0 {
            do {
                try await LogArchiver.startChain(at: manifest.appliedIndex, crm: crm, kv: engine.kv, member: engine.id)
            } catch {
                logger.warning(
                    "the log archive's chain could not be started at the backup; the archiver tries from the targets",
                    metadata: ["error": "\(error)"])
            }
        }
        var info = Self.info(
            BackupStore.Listed(
                id: id, target: first, manifest: manifest, bytes: BackupStore.bytes(of: BackupStore.path(first, id))))
        info.durationMs = UInt64(Date().timeIntervalSince(started) * 1000)
        logger.notice(
            "backup taken",
            metadata: [
                "backup": "\(id)", "applied_index": "\(manifest.appliedIndex)", "targets": "\(settings.targets.count)",
                "ms": "\(info.durationMs)", "by": "\(caller.owner)",
            ])
        return info
    }

    func listBackups(
        request: Crm_V1_ListBackupsRequest, context: ServerContext
    ) async throws -> Crm_V1_ListBackupsResponse {
        _ = try authorization.requireAdmin(context)
        let settings = try backupSettings()
        var response = Crm_V1_ListBackupsResponse()
        for target in settings.targets {
            let listed = BackupStore.list(target)
            response.backups += listed.backups.map(Self.info)
            response.partial += listed.partial.map { target + "/" + $0 }
        }
        return response
    }

    func verifyBackup(
        request: Crm_V1_VerifyBackupRequest, context: ServerContext
    ) async throws -> Crm_V1_VerifyBackupResponse {
        _ = try authorization.requireAdmin(context)
        let settings = try backupSettings()
        let found = try findBackup(request.id, in: settings)
        let verifier = BackupVerifier(
            directory: BackupStore.path(found.target, found.id), kek: settings.kek, authorities: settings.authorities)
        let started = Date()
        let deep = request.deep
        var response = try await offload { () -> Crm_V1_VerifyBackupResponse in
            var response = Crm_V1_VerifyBackupResponse()
            do {
                let report = try verifier.verify(deep: deep)
                response.chunks = UInt64(report.chunks)
                response.records = report.records
                response.auditEntries = UInt64(report.auditEntries)
            } catch {
                response.problem = "\(error)"
            }
            return response
        }
        response.backup = Self.info(found)
        response.durationMs = UInt64(Date().timeIntervalSince(started) * 1000)
        return response
    }

    /// A backup's files in pieces of at most `pullPieceBytes`, chunks first, the manifest last.
    func pullBackup(
        request: Crm_V1_PullBackupRequest, response: RPCWriter<Crm_V1_BackupPiece>, context: ServerContext
    ) async throws {
        _ = try authorization.requireAdmin(context)
        let found = try findBackup(request.id, in: try backupSettings())
        let directory = BackupStore.path(found.target, found.id)
        let files: [String]
        do {
            files = try BackupStore.files(of: directory)
        } catch {
            throw RPCError(code: .failedPrecondition, message: "\(error)")
        }
        for name in files {
            guard let handle = FileHandle(forReadingAtPath: directory + "/" + name) else {
                throw RPCError(code: .failedPrecondition, message: "\(name) of backup \(found.id) cannot be read")
            }
            defer { try? handle.close() }
            let size = try handle.seekToEnd()
            try handle.seek(toOffset: 0)
            var offset: UInt64 = 0
            repeat {
                let data = try handle.read(upToCount: Self.pullPieceBytes) ?? Data()
                guard !data.isEmpty || size == 0 else {
                    throw RPCError(code: .failedPrecondition, message: "\(name) of backup \(found.id) ended early")
                }
                var piece = Crm_V1_BackupPiece()
                piece.file = name
                piece.offset = offset
                piece.data = data
                piece.fileBytes = size
                try await response.write(piece)
                offset += UInt64(data.count)
            } while offset < size
        }
    }

    static let pullPieceBytes = 1 << 20

    /// The backup `text` names, from the first of this member's targets that holds it.
    func findBackup(_ text: String, in settings: BackupSettings) throws -> BackupStore.Listed {
        guard let id = BackupID(text) else {
            throw RPCError(code: .invalidArgument, message: "a backup id is 32 lower-case hexadecimal characters")
        }
        guard let found = settings.targets.lazy.flatMap({ BackupStore.list($0).backups }).first(where: { $0.id == id })
        else { throw RPCError(code: .notFound, message: "backup \(id) is in none of this member's targets") }
        return found
    }

    /// What backups need: targets, the backup key, this member's signing key and the CA.
    struct BackupSettings {
        var targets: [String]
        var kek: FileMasterKeyProvider
        var signer: BackupSigner
        var authorities: [[UInt8]]
    }

    func backupSettings() throws -> BackupSettings {
        guard let backup = config.backup else {
            throw RPCError(
                code: .failedPrecondition,
                message: "this member has no `backup` section in its config (targets and key_file)")
        }
        let kek: FileMasterKeyProvider
        do {
            kek = try FileMasterKeyProvider(path: backup.keyFile)
        } catch {
            throw RPCError(code: .failedPrecondition, message: "backup.key_file: \(error)")
        }
        guard let key = FileManager.default.contents(atPath: config.tls.key),
            let certificate = FileManager.default.contents(atPath: config.tls.cert),
            let ca = FileManager.default.contents(atPath: config.tls.ca)
        else { throw RPCError(code: .failedPrecondition, message: "this member's TLS files cannot be read") }
        for target in backup.targets {
            try? FileManager.default.createDirectory(
                atPath: target, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        return BackupSettings(
            targets: backup.targets, kek: kek,
            signer: BackupSigner(keyPEM: Array(key), certificatePEM: Array(certificate)),
            authorities: ECDSASignature.certificatesDER(pem: Array(ca)))
    }

    static func info(_ listed: BackupStore.Listed) -> Crm_V1_BackupInfo {
        var info = Crm_V1_BackupInfo()
        info.id = listed.id.description
        info.target = listed.target
        info.bytes = listed.bytes
        guard let manifest = listed.manifest else {
            info.problem = "its manifest does not read; verify it"
            return info
        }
        info.memberID = manifest.member
        info.appliedIndex = manifest.appliedIndex
        info.term = manifest.term
        info.createdAtMs = manifest.createdAtMillis
        info.counts = manifest.counts
        info.contentDigest = manifest.contentDigest
        info.auditHeadSeq = manifest.auditHead.seq
        return info
    }
}

/// One backup at a time on a member.
enum BackupGate {
    static let running = Mutex(false)
}
