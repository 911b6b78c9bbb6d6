import Testing

@testable import CRMChaos

/// The drill's checks on hand-made histories: each must pass a correct one and fail, saying
/// why, a broken one.
@Suite struct JudgeTests {
    /// invoke and ok (or another outcome) of one operation, `process` doing it over [from, to].
    static func op(
        _ process: Int, _ f: String, _ key: String, _ value: String?, _ from: UInt64, _ to: UInt64,
        outcome: HistoryEvent.Kind = .ok, read: String?? = nil, expected: String?? = nil
    ) -> [HistoryEvent] {
        [
            HistoryEvent(
                process: process, type: .invoke, f: f, key: key, value: f == "get" ? nil : value, expected: expected,
                time: from),
            HistoryEvent(
                process: process, type: outcome, f: f, key: key, value: f == "get" ? (read ?? nil) : value,
                expected: expected, time: to),
        ]
    }

    @Test func aReadOfAReplacedValueFailsAndIsNamed() {
        let history =
            Self.op(1, "put", "k", "v1", 0, 1_000) + Self.op(2, "put", "k", "v2", 2_000, 3_000)
            + Self.op(3, "get", "k", nil, 4_000, 5_000, read: .some("v1"))
        let (check, operations) = Judge.linearizability(history)
        #expect(!check.passed && operations == 3)
        #expect(check.detail.contains("key k has no linearization"), "\(check.detail)")
        #expect(
            check.detail.contains("returned v1") && check.detail.contains("put(v2) had been acknowledged"),
            "\(check.detail)")
    }

    /// The first key without an order may have no single read to blame (reads flip between
    /// two values); a stale read of another key is named instead.
    @Test func aStaleReadOfAnotherKeyIsNamedWhenTheFirstKeyHasNoneToBlame() {
        let flipping =
            Self.op(1, "put", "a", "v1", 0, 10_000) + Self.op(2, "put", "a", "v2", 0, 10_000)
            + Self.op(3, "get", "a", nil, 11_000, 12_000, read: .some("v1"))
            + Self.op(3, "get", "a", nil, 13_000, 14_000, read: .some("v2"))
            + Self.op(3, "get", "a", nil, 15_000, 16_000, read: .some("v1"))
        #expect(Judge.explain(key: "a", flipping).isEmpty)
        #expect(!Judge.linearizability(flipping).check.passed)
        let stale =
            Self.op(4, "put", "b", "w1", 0, 1_000) + Self.op(5, "put", "b", "w2", 2_000, 3_000)
            + Self.op(6, "get", "b", nil, 4_000, 5_000, read: .some("w1"))
        let check = Judge.linearizability(flipping + stale).check
        #expect(check.detail.contains("key a has no linearization"), "\(check.detail)")
        #expect(
            check.detail.contains("get(b)") && check.detail.contains("put(w2) had been acknowledged"), "\(check.detail)"
        )
    }

    /// A stale read of a counter: an increment to 9 had no answer, but the counter had long
    /// moved past 8, so that swap cannot have restored 9 and the read is still named.
    @Test func anIndeterminateSwapExplainsAReadOnlyWhereItsExpectedValueWasPossible() {
        var history =
            Self.op(1, "put", "c", "8", 0, 1_000)
            + Self.op(2, "cas", "c", "9", 2_000, 3_000, outcome: .info, expected: .some("8"))
            + Self.op(3, "cas", "c", "10", 4_000, 5_000, expected: .some("8"))
            + Self.op(4, "cas", "c", "11", 6_000, 7_000, expected: .some("10"))
        history += Self.op(5, "get", "c", nil, 8_000, 9_000, read: .some("9"))
        let check = Judge.linearizability(history).check
        #expect(!check.passed)
        #expect(
            check.detail.contains("returned 9") && check.detail.contains("cas(11) had been acknowledged"),
            "\(check.detail)")
        // While 8 was still the value the unanswered swap may yet apply: reading 9 then is fine.
        let early =
            Self.op(1, "put", "c", "8", 0, 1_000)
            + Self.op(2, "cas", "c", "9", 2_000, 3_000, outcome: .info, expected: .some("8"))
            + Self.op(5, "get", "c", nil, 8_000, 9_000, read: .some("9"))
        #expect(Judge.linearizability(early).check.passed)
        #expect(Judge.explain(key: "c", early).isEmpty)
    }

    @Test func concurrentWritesLeaveEitherValueReadable() {
        let history =
            Self.op(1, "put", "k", "v1", 0, 3_000) + Self.op(2, "put", "k", "v2", 1_000, 2_000)
            + Self.op(3, "get", "k", nil, 4_000, 5_000, read: .some("v1"))
        #expect(Judge.linearizability(history).check.passed)
        #expect(Judge.explain(key: "k", history).isEmpty)
    }

    @Test func anIndeterminateWriteMayOrMayNotHaveApplied() {
        let unknown = Self.op(1, "put", "k", "v1", 0, 1_000, outcome: .info)
        let sawIt = unknown + Self.op(2, "get", "k", nil, 2_000, 3_000, read: .some("v1"))
        let missedIt = unknown + Self.op(2, "get", "k", nil, 2_000, 3_000, read: .some(nil))
        #expect(Judge.linearizability(sawIt).check.passed)
        #expect(Judge.linearizability(missedIt).check.passed)
        let failedButSeen =
            Self.op(1, "put", "k", "v1", 0, 1_000, outcome: .fail)
            + Self.op(2, "get", "k", nil, 2_000, 3_000, read: .some("v1"))
        #expect(!Judge.linearizability(failedButSeen).check.passed, "a failed write certainly did not apply")
    }

    @Test func lostAndPhantomUniqueWritesFailTheCheck() {
        var counts = WorkloadLedger.Counts()
        counts.uniqueOK = ["u/a", "u/b"]
        counts.uniqueUnknown = ["u/c"]
        counts.uniqueFailed = ["u/d"]
        let good = Judge.uniqueWrites(counts, present: ["u/a", "u/b"])
        #expect(good.passed, "\(good.detail)")
        #expect(
            good.detail.contains("2 of 2 acknowledged unique writes present; 1 indeterminate (0 applied); 1 failed"),
            "\(good.detail)")
        let bad = Judge.uniqueWrites(counts, present: ["u/a", "u/c", "u/d", "u/e"])
        #expect(!bad.passed)
        #expect(
            bad.detail.contains("LOST 1: u/b") && bad.detail.contains("PHANTOM 2")
                && bad.detail.contains("1 indeterminate (1 applied)"), "\(bad.detail)")
        #expect(!Judge.uniqueWrites(counts, present: nil).passed, "an unreadable range is no proof")
    }

    @Test func theCounterMustHoldEveryAcknowledgedIncrementAndNoMore() {
        var counts = WorkloadLedger.Counts()
        counts.incrementsOK = 5
        counts.incrementsUnknown = 2
        #expect(Judge.counter(counts, final: "5", key: "c").passed)
        #expect(Judge.counter(counts, final: "7", key: "c").passed)
        let lost = Judge.counter(counts, final: "4", key: "c")
        #expect(!lost.passed && lost.detail.contains("1 acknowledged increments LOST"), "\(lost.detail)")
        #expect(!Judge.counter(counts, final: "8", key: "c").passed)
        #expect(!Judge.counter(counts, final: "five", key: "c").passed)
        #expect(!Judge.counter(counts, final: nil, key: "c").passed, "absent means 0, below 5 acknowledged")
        #expect(Judge.counter(WorkloadLedger.Counts(), final: nil, key: "c").passed)
    }
}

@Suite struct RecordJudgeTests {
    private func seen(
        _ kind: String, _ invoked: UInt64, _ completed: UInt64, _ version: UInt64, base: UInt64? = nil
    )
        -> RecordWorkload.Observation
    {
        RecordWorkload.Observation(
            record: "r", kind: kind, invoked: invoked, completed: completed, version: version, base: base)
    }

    @Test func versionsInRealTimeOrderPassAndEachKindOfViolationIsCaught() {
        let good = [
            seen("create", 0, 10, 5), seen("update", 11, 20, 9, base: 5), seen("get", 15, 25, 5),
            seen("get", 21, 30, 9), seen("update", 31, 40, 12, base: 9),
        ]
        #expect(RecordWorkload.versionsInOrder(good).passed, "a read concurrent with an update may see either")
        let stale = good + [seen("get", 41, 45, 9)]
        #expect(!RecordWorkload.versionsInOrder(stale).passed, "a read after version 12 was acknowledged saw 9")
        let twice = good + [seen("update", 50, 60, 12, base: 12)]
        let verdict = RecordWorkload.versionsInOrder(twice)
        #expect(!verdict.passed && verdict.detail.contains("made twice"))
        #expect(!RecordWorkload.versionsInOrder([seen("update", 0, 1, 3, base: 4)]).passed)
        #expect(
            RecordWorkload.versionsInOrder(good + [seen("lookup", 41, 45, 12), seen("list", 41, 46, 12)]).passed,
            "lookups and lists are reads: they make no version")
        #expect(!RecordWorkload.versionsInOrder(good + [seen("list", 41, 45, 9)]).passed, "a stale list")
    }

    @Test func lookupsAndListsMissingAnAcknowledgedPersonAreCaught() {
        func created(_ record: String, at completed: UInt64) -> RecordWorkload.Observation {
            RecordWorkload.Observation(
                record: record, kind: "create", invoked: completed - 1, completed: completed, version: 1)
        }
        let creates = [created("a1", at: 10), created("b2", at: 20), created("c3", at: 30)]
        typealias Listing = RecordWorkload.Listing
        typealias Lookup = RecordWorkload.Lookup
        var good = RecordWorkload.Reads()
        good.lookups = [Lookup(record: "b2", invoked: 25, found: ["b2"]), Lookup(record: "c3", invoked: 25, found: [])]
        good.listings = [
            Listing(invoked: 35, ids: ["a1", "b2"], more: true), Listing(invoked: 5, ids: [], more: false),
            Listing(invoked: 35, ids: ["a1", "b2", "c3"], more: false),
        ]
        let verdict = RecordWorkload.readsComplete(creates, good)
        #expect(verdict.passed, "c3 was created after the lookup began; the page ends before c3: \(verdict.detail)")
        var missedLookup = good
        missedLookup.lookups.append(Lookup(record: "a1", invoked: 11, found: []))
        #expect(!RecordWorkload.readsComplete(creates, missedLookup).passed)
        var twoFound = good
        twoFound.lookups.append(Lookup(record: "a1", invoked: 11, found: ["a1", "x9"]))
        #expect(!RecordWorkload.readsComplete(creates, twoFound).passed)
        var missedInPage = good
        missedInPage.listings.append(Listing(invoked: 35, ids: ["a1", "c3"], more: true))
        #expect(!RecordWorkload.readsComplete(creates, missedInPage).passed, "b2 is below the page's last id")
        var lastPageShort = good
        lastPageShort.listings.append(Listing(invoked: 35, ids: ["a1", "b2"], more: false))
        #expect(!RecordWorkload.readsComplete(creates, lastPageShort).passed, "the only page lacks c3")
        var unordered = good
        unordered.listings.append(Listing(invoked: 5, ids: ["b2", "a1"], more: false))
        #expect(!RecordWorkload.readsComplete(creates, unordered).passed)
    }
}
