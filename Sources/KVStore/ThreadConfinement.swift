import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// State promised to one thread, checked on access instead of promised in a comment (as
/// SwiftNIO's `NIOLoopBound` does for event loops): `claim()` makes the calling thread the
/// owner, `isOwner` tells whether the caller is it. Callers `assert(isOwner)`, so the check
/// costs nothing in release builds and runs in every debug test, simulated seed and drill.
public final class ThreadConfinement: Sendable {
    private let owner = Mutex<pthread_t?>(nil)

    public init() {}

    /// The calling thread owns the state from now on (a loop calls this when it starts).
    public func claim() {
        owner.withLock { $0 = pthread_self() }
    }

    /// Whether the calling thread owns the state; the first caller claims it when nobody has.
    public var isOwner: Bool {
        owner.withLock { owner in
            guard let current = owner else {
                owner = pthread_self()
                return true
            }
            return pthread_equal(current, pthread_self()) != 0
        }
    }
}
