import DequeModule
import Engine
import Foundation
import KVStore
import Raft
import Synchronization

/// Something for the Raft loop to do.
enum EngineEvent {
    case messages([Message], from: NodeID)
    /// A command, and its session write when a follower may forward it to the leader.
    case propose([UInt8], ProposalWaiter, forwardable: SessionWrite?)
    case read(ReadWaiter)
    case change(ConfigurationChange, ProposalWaiter)
    case transfer(NodeID, TransferWaiter)
    case snapshotReport(NodeID, Bool)
    case snapshotNow(CheckedContinuation<SnapshotMetadata, any Error>)
    /// Committed entries for the log archiver, from an index, up to a byte bound.
    case readArchive(from: UInt64, maxBytes: Int, CheckedContinuation<ArchiveRead, any Error>)
    case stop

    /// Answers the caller waiting on this event, if any, with `error`.
    func fail(_ error: EngineError) {
        switch self {
        case .propose(_, let waiter, _), .change(_, let waiter): waiter.fail(error)
        case .read(let waiter): waiter.fail(error)
        case .transfer(_, let waiter): waiter.fail(error)
        case .snapshotNow(let continuation): continuation.resume(throwing: error)
        case .readArchive(_, _, let continuation): continuation.resume(throwing: error)
        case .messages, .snapshotReport, .stop: break
        }
    }
}

/// The loop's queue of events: any thread posts, the loop thread takes.
///
/// Bounded: requests (proposals, reads, changes) beyond `maxRequests` waiting are answered at
/// once with `busy`, so a flood of calls costs callers a refusal, not the loop its heartbeats;
/// peer messages beyond `maxMessageBatches` are dropped (Raft sends again, and the leader
/// probes a follower it stops hearing from). Control events (stop, snapshot reports) always
/// get in. A deque, so that taking is O(taken) whatever is waiting.
final class EventInbox: @unchecked Sendable {
    let maxRequests: Int
    let maxMessageBatches: Int
    private let condition = NSCondition()
    private var events = Deque<EngineEvent>()
    private var requests = 0
    private var messageBatches = 0
    /// Events refused or dropped because the inbox was full.
    private(set) var refusedRequests = 0
    private(set) var droppedMessageBatches = 0

    init(maxRequests: Int = 20_000, maxMessageBatches: Int = 10_000) {
        precondition(maxRequests > 0 && maxMessageBatches > 0)
        self.maxRequests = maxRequests
        self.maxMessageBatches = maxMessageBatches
    }

    func post(_ event: EngineEvent) {
        condition.lock()
        switch event.kind {
        case .request where requests >= maxRequests:
            refusedRequests += 1
            condition.unlock()
            event.fail(.busy("more than \(maxRequests) requests are waiting for the Raft loop"))
            return
        case .message where messageBatches >= maxMessageBatches:
            droppedMessageBatches += 1
            condition.unlock()
            return
        case .request: requests += 1
        case .message: messageBatches += 1
        case .control: break
        }
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
        var taken: [EngineEvent] = []
        taken.reserveCapacity(Swift.min(max, events.count))
        while taken.count < max, let event = events.popFirst() {
            forget(event)
            taken.append(event)
        }
        return taken
    }

    func drain() -> [EngineEvent] {
        condition.lock()
        defer { condition.unlock() }
        let taken = Array(events)
        events.removeAll()
        requests = 0
        messageBatches = 0
        return taken
    }

    /// Waiting counts, for the status.
    var counts: (requests: Int, messageBatches: Int, refusedRequests: Int, droppedMessageBatches: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (requests, messageBatches, refusedRequests, droppedMessageBatches)
    }

    private func forget(_ event: EngineEvent) {
        switch event.kind {
        case .request: requests -= 1
        case .message: messageBatches -= 1
        case .control: break
        }
        assert(requests >= 0 && messageBatches >= 0, "inbox counts below zero")
    }
}

extension EngineEvent {
    enum Kind { case request, message, control }

    /// Which bound the event counts against.
    var kind: Kind {
        switch self {
        case .propose, .read, .change, .transfer, .snapshotNow, .readArchive: return .request
        case .messages: return .message
        case .snapshotReport, .stop: return .control
        }
    }
}
