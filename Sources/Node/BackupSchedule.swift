import Backup
import Foundation
import Synchronization

/// What this member knows of its backups: the newest one in its targets, and since when it has
/// led (the schedule runs on the leader). Read by the health monitor (BACKUP_STALE) and
/// `/metrics`.
public final class BackupStatus: Sendable {
    private struct State {
        var newestMillis: UInt64?
        var leadingSinceMillis: UInt64?
        /// The newest backup's applied index in this member's targets.
        var newestIndex: UInt64 = 0
        /// Entries compacted before they were archived: the last of them, and why.
        var gap: (through: UInt64, reason: String)?
        /// When the cluster's last restore drill passed (replicated).
        var drillMillis: UInt64?
    }
    /// BACKUP_STALE when no drill has passed for this long (a weekly drill, and a day's grace).
    static let drillMaxAgeMillis: UInt64 = 8 * 86_400_000
    private let state = Mutex(State())
    /// The schedule's interval (0: no schedule, never stale).
    let everyMillis: UInt64

    init(everyMillis: UInt64) { self.everyMillis = everyMillis }

    func succeeded(at millis: UInt64, index: UInt64) {
        state.withLock {
            $0.newestMillis = max($0.newestMillis ?? 0, millis)
            $0.newestIndex = max($0.newestIndex, index)
        }
    }

    /// Entries up to `through` left this member's log unarchived (`reason` says which and why).
    func gap(through: UInt64, reason: String) {
        state.withLock { $0.gap = (max(through, $0.gap?.through ?? 0), reason) }
    }

    /// Why BACKUP_GAP stands, or nil: entries were compacted unarchived, and no full backup
    /// taken since covers them (the point-in-time chain restarts at such a backup).
    public func archiveGap() -> String? {
        state.withLock { state in
            guard let gap = state.gap else { return nil }
            if state.newestIndex >= gap.through {
                state.gap = nil
                return nil
            }
            return gap.reason
        }
    }

    /// This member leads (since the first call that says so) or does not.
    func leading(_ leads: Bool, now: UInt64) {
        state.withLock { $0.leadingSinceMillis = leads ? ($0.leadingSinceMillis ?? now) : nil }
    }

    public var newestMillis: UInt64? { state.withLock { $0.newestMillis } }
    public var drillMillis: UInt64? { state.withLock { $0.drillMillis } }

    func drilled(at millis: UInt64) { state.withLock { $0.drillMillis = max($0.drillMillis ?? 0, millis) } }

    /// Why BACKUP_STALE stands, or nil: on a leader with a schedule, no backup for two intervals
    /// (counted from the newest backup, or from when this member began to lead if that is later).
    /// Or: no restore drill has passed for 8 days (counted the same way).
    public func staleness(now: UInt64) -> String? {
        let (newest, since, drill) = state.withLock { ($0.newestMillis, $0.leadingSinceMillis, $0.drillMillis) }
        guard everyMillis > 0, let since else { return nil }
        let from = max(newest ?? 0, since)
        if now > from, now - from > 2 * everyMillis {
            let hours = Double(now - from) / 3_600_000
            return (newest == nil ? "no backup in this member's targets" : "the newest backup is")
                + String(format: " %.1f h old", hours)
                + " (backup.every_hours \(everyMillis / 3_600_000)): look at this member's log for the failed backups"
        }
        let drilledFrom = max(drill ?? 0, since)
        guard now > drilledFrom, now - drilledFrom > Self.drillMaxAgeMillis else { return nil }
        let days = Double(now - drilledFrom) / 86_400_000
        return
            (drill == nil
            ? String(format: "no restore drill has passed in %.1f days of leading", days)
            : String(format: "the last restore drill passed %.1f days ago", days))
            + ": run `crmctl backup drill` (weekly, e.g. from cluster/systemd/crm-backup-drill.timer)"
    }
}

/// The leader's schedule: a backup when the newest in its targets is `every` old (or there is
/// none), and removal of backups older than `keep` (never a target's newest) and of partial
/// directories older than a day.
struct BackupSchedule {
    let everyMillis: UInt64
    let keepMillis: UInt64
    static let partialMaxAgeMillis: UInt64 = 86_400_000

    func isDue(newest: UInt64?, now: UInt64) -> Bool {
        guard everyMillis > 0 else { return false }
        guard let newest else { return true }
        return now >= newest &+ everyMillis
    }

    /// The backups of one target past `keep`, oldest first; the newest is always kept.
    func expired(_ backups: [BackupStore.Listed], now: UInt64) -> [BackupStore.Listed] {
        let dated = backups.compactMap { listed in listed.manifest.map { (listed, $0.createdAtMillis) } }
        guard let newest = dated.map(\.1).max() else { return [] }
        return dated.filter { $0.1 != newest && now > $0.1 && now - $0.1 > keepMillis }.map(\.0)
    }
}
