import Raft
import Testing

@testable import Simulation

/// The linearizability checker on hand-made histories: it accepts every history that has a
/// valid order and rejects every one that has none.
@Suite struct CheckerTests {
    private func op(
        _ client: UInt64, _ operation: KVOperation, _ invoked: UInt64, _ completed: UInt64?, _ result: KVResult?
    ) -> HistoryOperation {
        HistoryOperation(client: client, operation: operation, invoked: invoked, completed: completed, result: result)
    }

    @Test func sequentialWritesAndReadsAreLinearizable() {
        let history = [
            op(1, .put(key: "k", value: "a"), 0, 10, .done),
            op(1, .get(key: "k"), 20, 30, .value("a")),
            op(2, .delete(key: "k"), 40, 50, .done),
            op(2, .get(key: "k"), 60, 70, .value(nil)),
        ]
        #expect(LinearizabilityChecker().check(history) == .linearizable)
    }

    @Test func aReadOfAValueNeverWrittenIsRejected() {
        let history = [
            op(1, .put(key: "k", value: "a"), 0, 10, .done),
            op(2, .get(key: "k"), 20, 30, .value("b")),
        ]
        guard case .violation(let key, _) = LinearizabilityChecker().check(history) else {
            Issue.record("accepted a read of a value nobody wrote")
            return
        }
        #expect(key == "k")
    }

    /// The stale read a deposed leader would serve: b was written after a, completely before
    /// the read began, yet the read returns a.
    @Test func aStaleReadIsRejected() {
        let history = [
            op(1, .put(key: "k", value: "a"), 0, 10, .done),
            op(1, .put(key: "k", value: "b"), 20, 30, .done),
            op(2, .get(key: "k"), 40, 50, .value("a")),
        ]
        #expect(LinearizabilityChecker().check(history) != .linearizable)
    }

    @Test func aReadConcurrentWithAWriteMaySeeEitherValue() {
        for seen in ["a", "b"] {
            let history = [
                op(1, .put(key: "k", value: "a"), 0, 10, .done),
                op(1, .put(key: "k", value: "b"), 20, 60, .done),
                op(2, .get(key: "k"), 30, 40, .value(seen)),
            ]
            #expect(LinearizabilityChecker().check(history) == .linearizable, "read saw \(seen)")
        }
    }

    /// An indeterminate write may take effect at any time after its invocation, or never; but
    /// once a read has seen it, a later read cannot un-see it.
    @Test func anIndeterminateWriteMayTakeEffectOnceOrNever() {
        let unknown = op(1, .put(key: "k", value: "x"), 0, nil, nil)
        #expect(
            LinearizabilityChecker().check([unknown, op(2, .get(key: "k"), 100, 110, .value(nil))]) == .linearizable)
        #expect(
            LinearizabilityChecker().check([unknown, op(2, .get(key: "k"), 100, 110, .value("x"))]) == .linearizable)
        let flickers = [
            unknown,
            op(2, .get(key: "k"), 100, 110, .value("x")),
            op(2, .get(key: "k"), 120, 130, .value(nil)),
        ]
        #expect(LinearizabilityChecker().check(flickers) != .linearizable)
    }

    /// A fault that leaves hundreds of writes unanswered: the ones nobody observed are set
    /// aside, so the search decides within a small budget; one whose value a read saw stays in,
    /// and a read that later un-sees it is still caught.
    @Test func unobservedIndeterminateWritesDoNotSwampTheSearch() {
        var history = [op(0, .put(key: "k", value: "a"), 0, 10, .done)]
        for client in 1...300 {
            history.append(op(UInt64(client), .put(key: "k", value: "lost-\(client)"), 20 + UInt64(client), nil, nil))
            history.append(op(UInt64(client), .get(key: "k"), 20 + UInt64(client), nil, nil))
        }
        history.append(op(400, .put(key: "k", value: "seen"), 30, nil, nil))
        history.append(op(401, .get(key: "k"), 500, 510, .value("seen")))
        let relevant = LinearizabilityChecker.relevant(history)
        #expect(relevant.count == 3, "kept \(relevant.map(\.description))")
        #expect(LinearizabilityChecker(stepBudget: 1_000).check(history) == .linearizable)
        let unSeen = history + [op(402, .get(key: "k"), 520, 530, .value("a"))]
        guard case .violation = LinearizabilityChecker(stepBudget: 1_000).check(unSeen) else {
            Issue.record("a read went back to a replaced value and was accepted")
            return
        }
    }

    /// A compare-and-swap that did not swap saw "not the expected value"; dropping a write could
    /// make it wrong, so such a register keeps every write.
    @Test func aFailedCompareAndSwapKeepsEveryWrite() {
        let history = [
            op(1, .put(key: "k", value: "x"), 0, nil, nil),
            op(2, .get(key: "k"), 0, nil, nil),
            op(3, .cas(key: "k", expected: nil, new: "y"), 50, 60, .swapped(false)),
        ]
        #expect(LinearizabilityChecker.relevant(history).count == 2)
        #expect(LinearizabilityChecker().check(history) == .linearizable)
    }

    @Test func compareAndSwapFollowsTheRegister() {
        let bothSwapFromAbsent = [
            op(1, .cas(key: "k", expected: nil, new: "a"), 0, 10, .swapped(true)),
            op(2, .cas(key: "k", expected: nil, new: "b"), 20, 30, .swapped(true)),
        ]
        #expect(LinearizabilityChecker().check(bothSwapFromAbsent) != .linearizable)
        let oneSwapsOneFails = [
            op(1, .cas(key: "k", expected: nil, new: "a"), 0, 30, .swapped(true)),
            op(2, .cas(key: "k", expected: nil, new: "b"), 5, 25, .swapped(false)),
            op(3, .get(key: "k"), 40, 50, .value("a")),
        ]
        #expect(LinearizabilityChecker().check(oneSwapsOneFails) == .linearizable)
    }

    @Test func keysAreCheckedIndependentlyAndTheBadKeyIsNamed() {
        let history = [
            op(1, .put(key: "good", value: "a"), 0, 10, .done),
            op(1, .get(key: "good"), 20, 30, .value("a")),
            op(2, .put(key: "bad", value: "a"), 0, 10, .done),
            op(2, .get(key: "bad"), 20, 30, .value(nil)),
        ]
        #expect(
            LinearizabilityChecker().check(history)
                == .violation(
                    key: "bad",
                    operations: [
                        "[0–10] client 2: put(bad, a) → ok", "[20–30] client 2: get(bad) → =nil",
                    ]))
    }

    /// Histories produced by a real register under random overlap are always accepted, and
    /// quickly (no `undecided`), even with many concurrent and indeterminate operations; the
    /// same histories with one read's value changed to one never written are rejected.
    @Test func randomConcurrentHistoriesOfARealRegisterAreAccepted() {
        var random = SeededRandom(seed: 7)
        for round in 0..<40 {
            let history = Self.registerHistory(operations: 200, clients: 8, random: &random)
            #expect(LinearizabilityChecker(stepBudget: 2_000_000).check(history) == .linearizable, "round \(round)")
            var broken = history
            if let read = broken.indices.first(where: {
                if case .get = broken[$0].operation, broken[$0].result != nil { return true }; return false
            }) {
                broken[read].result = .value("never-written")
                #expect(LinearizabilityChecker(stepBudget: 2_000_000).check(broken) != .linearizable, "round \(round)")
            }
        }
    }

    /// Runs operations on one register in a random real order: each takes effect at one instant
    /// inside an interval drawn around it; some never report back (indeterminate).
    static func registerHistory(operations: Int, clients: Int, random: inout SeededRandom) -> [HistoryOperation] {
        var value: String? = nil
        var history: [HistoryOperation] = []
        var clientFree = [UInt64](repeating: 0, count: clients)
        var time: UInt64 = 0
        for number in 0..<operations {
            let client = Int(random.next(below: UInt64(clients)))
            // The operation takes effect at `time` (increasing, so generation order is the real
            // order), inside [invoked, completed]; the client's operations do not overlap.
            time = max(time + 1 + random.next(below: 3), clientFree[client])
            let invoked = max(clientFree[client], time >= 20 ? time - random.next(below: 20) : 0)
            let completed = time + random.next(below: 20)
            let operation: KVOperation
            let result: KVResult
            switch random.next(below: 4) {
            case 0:
                operation = .put(key: "k", value: "v\(number)")
                value = "v\(number)"
                result = .done
            case 1:
                operation = .cas(key: "k", expected: value, new: "v\(number)")
                value = "v\(number)"
                result = .swapped(true)
            case 2:
                operation = .delete(key: "k")
                value = nil
                result = .done
            default:
                operation = .get(key: "k")
                result = .value(value)
            }
            let lost = operation.isWrite && random.next(below: 20) == 0
            history.append(
                HistoryOperation(
                    client: UInt64(client), operation: operation, invoked: invoked,
                    completed: lost ? nil : completed, result: lost ? nil : result))
            clientFree[client] = completed + 1
        }
        return history
    }
}
