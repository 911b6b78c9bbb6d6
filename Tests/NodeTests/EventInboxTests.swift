import Engine
import Foundation
import Raft
import Testing

@testable import Node

/// The Raft loop's inbox is bounded (security review F11): requests over the bound are refused
/// with `busy` at once, peer batches over theirs are dropped, and taking stays cheap.
@Suite struct EventInboxTests {
    @Test func aMillionPeerBatchesAreBoundedAndTakingStaysCheap() {
        let inbox = EventInbox(maxRequests: 100, maxMessageBatches: 1000)
        let batch = [Message(kind: .heartbeat, from: 2, to: 1, term: 1)]
        let started = ContinuousClock.now
        for _ in 0..<1_000_000 { inbox.post(.messages(batch, from: 2)) }
        inbox.post(.snapshotReport(2, true))
        let posted = ContinuousClock.now - started
        #expect(inbox.counts.messageBatches == 1000)
        #expect(inbox.counts.droppedMessageBatches == 999_000)
        var taken = 0
        while case let events = inbox.take(max: 64, until: 0), !events.isEmpty { taken += events.count }
        #expect(taken == 1001, "the bounded batches and the control event, which always gets in")
        #expect(posted < .seconds(30), "posting is O(1): \(posted)")
    }

    @Test func requestsOverTheBoundAreRefusedBusyAtOnce() async {
        let inbox = EventInbox(maxRequests: 1000, maxMessageBatches: 10)
        let refused = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<2000 {
                group.addTask {
                    do {
                        _ = try await withCheckedThrowingContinuation {
                            (continuation: CheckedContinuation<UInt64, any Error>) in
                            inbox.post(.read(ReadWaiter(startedAt: 0, deadline: 0) { continuation.resume(with: $0) }))
                        }
                        return false
                    } catch let error as EngineError {
                        if case .busy = error { return true }
                        return false
                    } catch {
                        return false
                    }
                }
            }
            // The waiting ones are answered when the loop would drain at shutdown.
            while inbox.counts.requests + inbox.counts.refusedRequests < 2000 {
                try? await Task.sleep(nanoseconds: 1_000_000)
            }
            for event in inbox.drain() { event.fail(.stopped) }
            var count = 0
            for await wasBusy in group where wasBusy { count += 1 }
            return count
        }
        #expect(refused == 1000)
        #expect(inbox.counts.refusedRequests == 1000)
    }
}
