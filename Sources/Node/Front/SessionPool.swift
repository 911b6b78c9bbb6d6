import CRMProto
import Synchronization

/// Sessions the front opens on its own behalf, so that a client's write without a session
/// can still be retried across a leader change and apply exactly once. Each session carries
/// one write at a time (the state machine keeps only a session's last outcome), so the pool
/// holds as many as there are concurrent writes, up to `capacity`.
final class SessionPool: Sendable {
    struct Lease: Sendable, Equatable {
        var sessionID: UInt64
        var sequence: UInt64

        var writeSession: Crm_V1_WriteSession {
            var session = Crm_V1_WriteSession()
            session.sessionID = sessionID
            session.sequence = sequence
            return session
        }
    }

    let capacity: Int
    private let state = Mutex<(free: [Lease], total: Int)>(([], 0))

    init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
    }

    var openCount: Int { state.withLock { $0.total } }

    /// A free session with its next sequence number, opening a new one (with `open`) while
    /// under capacity; nil when the pool is exhausted or the session could not be opened.
    func acquire(open: @Sendable () async throws -> UInt64) async -> Lease? {
        enum Take { case lease(Lease), open, none }
        let take: Take = state.withLock { state in
            if let lease = state.free.popLast() { return .lease(lease) }
            guard state.total < capacity else { return .none }
            state.total += 1
            return .open
        }
        switch take {
        case .lease(let lease): return lease
        case .none: return nil
        case .open:
            do {
                return Lease(sessionID: try await open(), sequence: 1)
            } catch {
                state.withLock { $0.total -= 1 }
                return nil
            }
        }
    }

    /// Returns a session after its write finished (whatever the outcome): its next write takes
    /// the next number, which is above anything the last one may have applied.
    func release(_ lease: Lease) {
        state.withLock { $0.free.append(Lease(sessionID: lease.sessionID, sequence: lease.sequence + 1)) }
    }

    /// Forgets a session the cluster no longer knows (it expired).
    func discard(_ lease: Lease) {
        state.withLock { $0.total -= 1 }
    }

    /// Empties the pool (at shutdown), returning the sessions to close.
    func drain() -> [UInt64] {
        state.withLock { state in
            defer { state = ([], 0) }
            return state.free.map(\.sessionID)
        }
    }
}
