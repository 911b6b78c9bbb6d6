import Dispatch
import Synchronization

/// The time a leader stamps on the commands it proposes; the state machine's log clock (which
/// expires idle sessions) is the largest stamp applied. Within one term the stamp is the log
/// clock when the term's first proposal was made here, advanced by this member's monotonic
/// clock since: a wall clock that jumps mid-term moves nothing (one leader an hour ahead would
/// otherwise expire every session of the cluster at once). Only a brand-new cluster, whose log
/// clock is still 0, starts from the wall clock. The log clock loses the time elections take
/// and the apply lag at each new term, so sessions live slightly longer, never shorter.
final class ProposalClock: Sendable {
    private struct Anchor {
        var term: UInt64
        var millis: UInt64
        var monotonicNanoseconds: UInt64
    }

    private let anchor = Mutex<Anchor?>(nil)

    func stamp(term: UInt64, logClockMillis: UInt64) -> UInt64 {
        anchor.withLock { anchor in
            // Read under the lock: a reading taken before it could predate an anchor that
            // another caller set meanwhile.
            let monotonic = DispatchTime.now().uptimeNanoseconds
            if anchor?.term != term {
                anchor = Anchor(
                    term: term, millis: logClockMillis > 0 ? logClockMillis : WallClock.nowMillis(),
                    monotonicNanoseconds: monotonic)
            }
            return anchor!.millis + (monotonic - anchor!.monotonicNanoseconds) / 1_000_000
        }
    }
}
