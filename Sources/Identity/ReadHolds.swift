import BinaryCoding
import CRM
import KVStore
import Synchronization

/// The exfiltration guard's count, kept by the leader (every read's audit entry passes through
/// it): the distinct data subjects whose personal data each user was given in the current hour.
/// A user past `limit` is reported once per hour; the caller then stops their personal reads (a
/// replicated hold, `ReadHolds`). A new leader starts counting afresh.
public final class SubjectCounter: Sendable {
    public let limit: Int
    public static let windowMillis: UInt64 = 3_600_000
    /// Users counted at once; past it the windows that ended are forgotten, then the oldest.
    public static let maxUsers = 10_000

    struct Window {
        var startMillis: UInt64
        var subjects: Set<CRMID>
        var reported: Bool
    }

    private let windows = Mutex<[CRMID: Window]>([:])

    public init(limit: Int) {
        precondition(limit > 0, "the bound is at least one subject")
        self.limit = limit
    }

    /// Counts `subjects` read by `user` at `now`; true when this read takes them past the bound
    /// for the first time in their window.
    public func count(_ subjects: [CRMID], by user: CRMID, now: UInt64) -> Bool {
        windows.withLock { windows in
            if windows[user] == nil, windows.count >= Self.maxUsers { Self.evict(&windows, now: now) }
            var window = windows[user] ?? Window(startMillis: now, subjects: [], reported: false)
            if now >= window.startMillis &+ Self.windowMillis {
                window = Window(startMillis: now, subjects: [], reported: false)
            }
            if !window.reported {
                for subject in subjects where window.subjects.count <= limit { window.subjects.insert(subject) }
            }
            let passed = !window.reported && window.subjects.count > limit
            if passed {
                window.reported = true
                window.subjects = [] // nothing more to count this hour
            }
            windows[user] = window
            assert(window.subjects.count <= limit + 1, "a window holds at most one subject past the bound")
            return passed
        }
    }

    public var trackedUsers: Int { windows.withLock { $0.count } }

    private static func evict(_ windows: inout [CRMID: Window], now: UInt64) {
        windows = windows.filter { now < $0.value.startMillis &+ windowMillis }
        while windows.count >= maxUsers, let oldest = windows.min(by: { $0.value.startMillis < $1.value.startMillis }) {
            windows[oldest.key] = nil
        }
    }
}

/// Holds on users' personal reads at `c/<workspace>/xg/<user>`: set by the exfiltration guard,
/// lifted by a user administrator (`UnlockUser`). While one stands, every read of that user
/// that would release a personal field is refused.
public struct ReadHolds: Sendable {
    public let kv: ReplicatedKV
    public let workspace: UInt32

    public init(kv: ReplicatedKV, workspace: UInt32) {
        self.kv = kv
        self.workspace = workspace
    }

    public func key(_ user: CRMID) -> [UInt8] { CRMLayout.workspaceKey(workspace, "/xg/") + user.bytes }

    public func isHeld(_ user: CRMID) throws -> Bool { try kv.crmValue(key(user)) != nil }

    /// The operation that holds `user`'s personal reads from `now`.
    public func hold(_ user: CRMID, now: UInt64, subjects: Int) -> TransactionOperation {
        var writer = BinaryWriter()
        writer.u8(1)
        writer.u64(now)
        writer.u32(UInt32(clamping: subjects))
        return .putStamped(key: key(user), value: writer.bytes)
    }

    public func lift(_ user: CRMID) -> TransactionOperation { .delete(key: key(user)) }
}
