import CRM
import KVStore
import Synchronization

/// The leader's field-history retention: every minute it walks on through `h/` from where it
/// stopped, at most `maxScanned` rows a step, and removes the rows older than
/// `crm.history_retention_days` in transactions of at most `maxPerTransaction` deletions.
final class HistoryRetention: Sendable {
    let crm: CRMRecords
    let retentionMillis: UInt64
    static let maxScanned = 5_000
    static let maxPerTransaction = 500
    private let cursor = Mutex<[UInt8]?>(nil)

    init(crm: CRMRecords, retentionDays: Int) {
        precondition(retentionDays >= 1, "history is kept at least a day")
        self.crm = crm
        retentionMillis = UInt64(retentionDays) * 86_400_000
    }

    /// One bounded step (on the leader only); answers the rows removed.
    @discardableResult
    func step() async -> Int {
        guard crm.isLeader, crm.local.gate().refusal == nil else { return 0 }
        let now = crm.local.nowMillis()
        guard now > retentionMillis else { return 0 }
        let history = FieldHistory(kv: crm.engine.kv, workspace: crm.changes.workspace)
        do {
            let (keys, next) = try history.expired(
                before: now - retentionMillis, after: cursor.withLock { $0 }, limit: Self.maxScanned)
            var removed = 0
            for start in stride(from: 0, to: keys.count, by: Self.maxPerTransaction) {
                let batch = keys[start..<min(keys.count, start + Self.maxPerTransaction)]
                let transaction = Transaction(operations: batch.map { .delete(key: $0) })
                _ = try await crm.propose(transaction, caller: Caller(identity: .member(crm.engine.id)), audit: nil)
                removed += batch.count
            }
            cursor.withLock { $0 = next }
            if removed > 0 {
                crm.logger.info("field history past its retention removed", metadata: ["rows": "\(removed)"])
            }
            return removed
        } catch {
            crm.logger.warning("field history retention step failed; trying later", metadata: ["error": "\(error)"])
            return 0
        }
    }
}
