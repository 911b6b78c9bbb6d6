import CProcessControl
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Scheduling priority of the node's threads. Client-facing event loops run at a higher nice
/// value than the Raft loop and the peer transport, so that when clients saturate the CPU the
/// threads that keep leadership (heartbeats, votes, the log) still run on time. Raising a
/// thread's nice value needs no privilege.
enum ThreadPriority {
    static let clientNiceIncrement: Int32 = 5

    /// Raises the nice value of every thread of `group` by `increment`.
    static func lower(_ group: MultiThreadedEventLoopGroup, by increment: Int32, logger: Logger) {
        #if os(Linux)
        for loop in group.makeIterator() {
            loop.execute {
                let thread = id_t(crm_thread_id())
                errno = 0
                let current = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), thread)
                guard errno == 0,
                    setpriority(__priority_which_t(PRIO_PROCESS.rawValue), thread, current + increment) == 0
                else {
                    logger.warning("could not lower a client thread's priority", metadata: ["errno": "\(errno)"])
                    return
                }
            }
        }
        #endif
    }
}
