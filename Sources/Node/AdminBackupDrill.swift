import Backup
import BinaryCoding
import CRMProto
import Foundation
import GRPCCore
import KVStore

/// Restore drills (`crmctl backup drill` restores a backup into a scratch member, starts it and
/// checks it): their results, recorded on the leader. Each is an audit entry (`backup.drill`);
/// a passed drill's time is also put in the replicated state, so that every member exports it
/// and whichever leads raises BACKUP_STALE when none has passed for 8 days.
extension AdminService {
    func recordBackupDrill(
        request: Crm_V1_RecordBackupDrillRequest, context: ServerContext
    ) async throws -> Crm_V1_RecordBackupDrillResponse {
        let admin = try authorization.requireAdmin(context)
        guard BackupID(request.backupID) != nil else {
            throw RPCError(code: .invalidArgument, message: "a backup id is 32 lower-case hexadecimal characters")
        }
        guard request.detail.utf8.count <= 2048 else {
            throw RPCError(code: .invalidArgument, message: "a drill's detail is at most 2048 bytes")
        }
        let caller = Caller(identity: .client(admin))
        var entry = caller.audit(
            "backup.drill",
            reason:
                "backup \(request.backupID) \(request.passed ? "passed" : "failed") its restore drill in \(request.durationMs) ms: \(request.detail)"
        )
        guard request.passed else {
            entry.outcome = .failed
            try await audit.record([entry], wait: true)
            return Crm_V1_RecordBackupDrillResponse()
        }
        let now = WallClock.nowMillis()
        let transaction = Transaction(operations: [.put(key: BackupDrillMark.key, value: BackupDrillMark.encode(now))])
        _ = try await crm.propose(transaction, caller: caller, audit: entry)
        backupStatus.drilled(at: now)
        logger.notice("restore drill passed", metadata: ["backup": "\(request.backupID)", "by": "\(admin)"])
        return Crm_V1_RecordBackupDrillResponse()
    }
}

/// When the last restore drill passed, in the replicated state (`c/sys/drill`, Unix ms).
enum BackupDrillMark {
    static let key = Array("sys/drill".utf8)

    static func encode(_ millis: UInt64) -> [UInt8] {
        var writer = BinaryWriter(capacity: 8)
        writer.u64(millis)
        return writer.bytes
    }

    static func read(_ kv: ReplicatedKV) throws -> UInt64? {
        guard let value = try kv.crmValue(key) else { return nil }
        var reader = BinaryReader(value.payload)
        guard let millis = reader.u64(), reader.isAtEnd else { return nil }
        return millis
    }
}
