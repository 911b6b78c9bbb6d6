import Foundation

/// The wall clock a member stamps proposals (session times) and alarms with. Nothing that
/// keeps data safe rests on it: Raft's timers are monotonic, and the replicated log clock only
/// moves forward. A drill shifts it (`clock_offset_ms`, debug builds) to show exactly that.
enum WallClock {
    static func now() -> Date { Date().addingTimeInterval(FaultHooks.shared.clockOffsetSeconds) }

    static func nowMillis() -> UInt64 { UInt64(max(0, now().timeIntervalSince1970 * 1000)) }
}
