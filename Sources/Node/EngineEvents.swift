import Foundation
import KVStore
import Raft
import Synchronization

/// Something for the Raft loop to do.
enum EngineEvent {
    case messages([Message], from: NodeID)
    case propose([UInt8], ProposalWaiter)
    case read(ReadWaiter)
    case change(ConfigurationChange, ProposalWaiter)
    case transfer(NodeID, ReadWaiter)
    case snapshotReport(NodeID, Bool)
    case snapshotNow(CheckedContinuation<SnapshotMetadata, any Error>)
    case stop

    /// Answers the caller waiting on this event, if any, with `error`.
    func fail(_ error: EngineError) {
        switch self {
        case .propose(_, let waiter), .change(_, let waiter): waiter.fail(error)
        case .read(let waiter), .transfer(_, let waiter): waiter.fail(error)
        case .snapshotNow(let continuation): continuation.resume(throwing: error)
        case .messages, .snapshotReport, .stop: break
        }
    }
}

/// A caller waiting for a proposal to be applied. Answered exactly once.
final class ProposalWaiter: @unchecked Sendable {
    private var continuation: CheckedContinuation<ProposalResult, any Error>?
    let deadline: UInt64
    let startedAt = DispatchTime.now().uptimeNanoseconds
    /// The term the proposal was appended in: an entry of another term at its index means it
    /// was replaced.
    var term: UInt64 = 0

    init(continuation: CheckedContinuation<ProposalResult, any Error>, deadline: UInt64) {
        self.continuation = continuation
        self.deadline = deadline
    }

    func succeed(_ result: ProposalResult) {
        continuation?.resume(returning: result)
        continuation = nil
    }

    func fail(_ error: EngineError) {
        continuation?.resume(throwing: error)
        continuation = nil
    }
}

/// A caller waiting for a read point (or a transfer). Answered exactly once.
final class ReadWaiter: @unchecked Sendable {
    private var continuation: CheckedContinuation<Void, any Error>?
    let deadline: UInt64
    let startedAt = DispatchTime.now().uptimeNanoseconds

    init(continuation: CheckedContinuation<Void, any Error>, deadline: UInt64) {
        self.continuation = continuation
        self.deadline = deadline
    }

    func succeed(_ value: Void) {
        continuation?.resume()
        continuation = nil
    }

    func fail(_ error: EngineError) {
        continuation?.resume(throwing: error)
        continuation = nil
    }
}

/// The loop's queue of events: any thread posts, the loop thread takes. Unbounded in count
/// but every producer is itself bounded (requests by the client API's limits, messages by the
/// transport's queues).
final class EventInbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var events: [EngineEvent] = []

    func post(_ event: EngineEvent) {
        condition.lock()
        events.append(event)
        condition.signal()
        condition.unlock()
    }

    /// Up to `max` events; waits until one arrives or the monotonic clock reaches `deadline`.
    func take(max: Int, until deadline: UInt64) -> [EngineEvent] {
        condition.lock()
        defer { condition.unlock() }
        while events.isEmpty {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { return [] }
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline - now) / 1e9))
        }
        let taken = Array(events.prefix(max))
        events.removeFirst(taken.count)
        return taken
    }

    func drain() -> [EngineEvent] {
        condition.lock()
        defer { condition.unlock() }
        let taken = events
        events = []
        return taken
    }
}
