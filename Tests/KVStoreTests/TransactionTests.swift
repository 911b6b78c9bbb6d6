import BinaryCoding
import Raft
import Storage
import Testing

@testable import KVStore

@Suite struct TransactionTests {
    private func txn(
        _ session: UInt64, _ sequence: UInt64, at time: UInt64 = 5000, _ conditions: [TransactionCondition] = [],
        _ operations: [TransactionOperation]
    ) -> KVCommand {
        .transaction(
            session: session, sequence: sequence, owner: "", proposedAtMillis: time,
            Transaction(conditions: conditions, operations: operations))
    }

    private func outcomes(_ applied: [ReplicatedKV.Applied]) -> [KVOutcome] { applied.map(\.outcome) }

    @Test func aTransactionAppliesEveryOperationWithItsVersionAndTime() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        let results = try kv.apply(
            log.entries([
                txn(
                    0, 0, at: 7000, [.absent(key: bytes("r/1"))],
                    [
                        .putStamped(key: bytes("r/1"), value: bytes("record")),
                        .put(key: bytes("x/em/t1/1"), value: []),
                        .putAtLogTime(prefix: bytes("x/up/"), suffix: bytes("/1")),
                    ])
            ]))
        #expect(outcomes(results) == [.transaction(.applied(version: 1))])
        #expect(try kv.crmValue(bytes("r/1")) == CRMValue(version: 1, updatedAtMillis: 7000, payload: bytes("record")))
        #expect(try kv.crmValue(bytes("x/em/t1/1")) == CRMValue(version: nil, updatedAtMillis: 0, payload: []))
        var byTime = BinaryWriter()
        byTime.raw(bytes("x/up/")); byTime.u64(7000); byTime.raw(bytes("/1"))
        #expect(try kv.crmValue(byTime.bytes) != nil, "the entry is keyed by the log time the record carries")
        // CRM state is out of the KV API's reach, and the KV API's keys out of the CRM's.
        #expect(try kv.get(bytes("r/1")) == nil)
        _ = try kv.apply(
            log.entries([
                .write(session: 0, sequence: 0, proposedAtMillis: 1, .put(key: bytes("c/r/1"), value: bytes("kv")))
            ]))
        #expect(try kv.crmValue(bytes("r/1"))?.payload == bytes("record"))
        let scan = try kv.crmScan(from: bytes("r/"), to: bytes("r0"), limit: 10)
        #expect(scan.entries.map(\.key) == [bytes("r/1")] && !scan.more)
    }

    @Test func aStaleVersionOrAFailedConditionAppliesNothing() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply(log.entries([txn(0, 0, [], [.putStamped(key: bytes("r/1"), value: bytes("v1"))])]))
        let results = try kv.apply(
            log.entries([
                // Both read version 1; the second update finds version 2 and changes nothing.
                txn(0, 0, [.version(key: bytes("r/1"), 1)], [.putStamped(key: bytes("r/1"), value: bytes("v2"))]),
                txn(
                    0, 0, [.version(key: bytes("r/1"), 1)],
                    [.putStamped(key: bytes("r/1"), value: bytes("v3")), .put(key: bytes("side"), value: [])]),
                // The first condition holds, the second does not: nothing either.
                txn(
                    0, 0, [.present(key: bytes("r/1")), .absent(key: bytes("r/1"))],
                    [.delete(key: bytes("r/1")), .put(key: bytes("side"), value: [])]),
                txn(0, 0, [.version(key: bytes("missing"), 1)], [.put(key: bytes("side"), value: [])]),
            ]))
        #expect(
            outcomes(results) == [
                .transaction(.applied(version: 2)),
                .transaction(.conditionFailed(condition: 0, current: 2)),
                .transaction(.conditionFailed(condition: 1, current: 2)),
                .transaction(.conditionFailed(condition: 0, current: nil)),
            ])
        #expect(try kv.crmValue(bytes("r/1"))?.payload == bytes("v2"))
        #expect(try kv.crmValue(bytes("side")) == nil)
    }

    @Test func aTransactionInASessionAppliesOnceAndKeepsItsOutcomeAcrossARestart() throws {
        let disk = try KVDisk()
        var kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(id: 9, proposedAtMillis: 1000))])
        let create = txn(9, 1, [.absent(key: bytes("r/a"))], [.putStamped(key: bytes("r/a"), value: bytes("a"))])
        #expect(outcomes(try kv.apply([log.entry(create)])) == [.transaction(.applied(version: 2))])
        kv = try disk.open()
        // The retry (after an unknown outcome) is answered from the session, not applied again:
        // applied again, its condition would fail.
        #expect(outcomes(try kv.apply([log.entry(create)])) == [.transaction(.applied(version: 2))])
        #expect(try kv.crmValue(bytes("r/a"))?.version == 2)
        let stale = txn(9, 2, [.version(key: bytes("r/a"), 1)], [.delete(key: bytes("r/a"))])
        let failed = KVOutcome.transaction(.conditionFailed(condition: 0, current: 2))
        #expect(outcomes(try kv.apply([log.entry(stale)])) == [failed])
        kv = try disk.open()
        #expect(outcomes(try kv.apply([log.entry(stale)])) == [failed])
        #expect(outcomes(try kv.apply([log.entry(create)])) == [.superseded(last: 2)])
    }

    @Test func operationsSeeEarlierOnesAndEarlierEntriesOfTheSameBatch() throws {
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        var log = LogWriter()
        _ = try kv.apply(
            log.entries([txn(0, 0, [], (0..<5).map { .put(key: bytes("i/\($0)"), value: [UInt8($0)]) })]))
        let results = try kv.apply(
            log.entries([
                // Written in the same apply call as the range delete below (still in its overlay).
                txn(0, 0, [], [.put(key: bytes("i/5"), value: []), .delete(key: bytes("i/0"))]),
                txn(
                    0, 0, [.present(key: bytes("i/5"))],
                    [
                        .put(key: bytes("i/6"), value: []),
                        .deleteRange(from: bytes("i/2"), to: bytes("i/7")),
                        .put(key: bytes("i/3"), value: bytes("again")),
                    ]),
            ]))
        #expect(outcomes(results) == [.transaction(.applied(version: 2)), .transaction(.applied(version: 3))])
        let left = try kv.crmScan(from: bytes("i/"), to: bytes("i0"), limit: 100).entries
        #expect(left.map(\.key) == [bytes("i/1"), bytes("i/3")])
        #expect(left.last?.value.payload == bytes("again"))
    }

    @Test func aRangeBeyondItsBoundFailsTheWholeTransaction() throws {
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        var log = LogWriter()
        let count = TransactionLimits.maxRangeDeletions + 1
        let puts = (0..<count).map { TransactionOperation.put(key: bytes("big/\(100_000 + $0)"), value: []) }
        for chunk in stride(from: 0, to: count, by: TransactionLimits.maxOperations) {
            let operations = Array(puts[chunk..<min(count, chunk + TransactionLimits.maxOperations)])
            _ = try kv.apply(log.entries([txn(0, 0, [], operations)]))
        }
        let results = try kv.apply(
            log.entries([
                txn(
                    0, 0, [],
                    [.put(key: bytes("marker"), value: []), .deleteRange(from: bytes("big/"), to: bytes("big0"))])
            ]))
        guard case .refused(let why)? = results.first?.outcome else {
            Issue.record("expected a refusal, got \(results)")
            return
        }
        #expect(why.contains("more than \(TransactionLimits.maxRangeDeletions) keys"))
        #expect(try kv.crmValue(bytes("marker")) == nil)
        // One key fewer fits.
        _ = try kv.apply(log.entries([txn(0, 0, [], [.delete(key: bytes("big/100000"))])]))
        let applied = try kv.apply(
            log.entries([txn(0, 0, [], [.deleteRange(from: bytes("big/"), to: bytes("big0"))])]))
        #expect(applied.first?.outcome == .transaction(.applied(version: log.next - 1)))
        #expect(try kv.crmScan(from: bytes("big/"), to: bytes("big0"), limit: 10).entries.isEmpty)
    }

    @Test func theKeySetConditionReadsTheVersionInUse() throws {
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        var log = LogWriter()
        var one = BinaryWriter()
        one.u64(1)
        let results = try kv.apply(
            log.entries([
                txn(0, 0, [.keySet(1)], [.put(key: bytes("a"), value: [])]),
                txn(0, 0, [.keySet(0)], [.putStamped(key: CRMKeys.keySetInUse, value: one.bytes)]),
                txn(0, 0, [.keySet(0)], [.put(key: bytes("a"), value: [])]),
                txn(0, 0, [.keySet(1)], [.put(key: bytes("a"), value: [])]),
            ]))
        #expect(
            outcomes(results) == [
                .transaction(.conditionFailed(condition: 0, current: 0)), .transaction(.applied(version: 2)),
                .transaction(.conditionFailed(condition: 0, current: 1)), .transaction(.applied(version: 4)),
            ])
    }

    @Test func limitsAreCheckedBeforeProposingAndAgainAtApply() throws {
        let key = bytes("k")
        let cases: [(Transaction, String)] = [
            (Transaction(operations: []), "at least one operation"),
            (
                Transaction(
                    operations: Array(repeating: .delete(key: key), count: TransactionLimits.maxOperations + 1)),
                "at most \(TransactionLimits.maxOperations) operations"
            ),
            (
                Transaction(
                    conditions: Array(repeating: .present(key: key), count: TransactionLimits.maxConditions + 1),
                    operations: [.delete(key: key)]), "at most \(TransactionLimits.maxConditions) conditions"
            ),
            (Transaction(operations: [.delete(key: [])]), "keys are 1 to"),
            (
                Transaction(operations: [.delete(key: [UInt8](repeating: 1, count: TransactionLimits.maxKeyBytes + 1))]
                ),
                "keys are 1 to"
            ),
            (Transaction(operations: [.deleteRange(from: bytes("b"), to: bytes("a"))]), "ends after it starts"),
            (
                Transaction(
                    operations: [
                        .put(key: key, value: [UInt8](repeating: 0, count: TransactionLimits.maxPayloadBytes))
                    ]), "at most \(TransactionLimits.maxPayloadBytes) bytes"
            ),
        ]
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        var log = LogWriter()
        for (transaction, reason) in cases {
            #expect(transaction.problem?.contains(reason) == true, "\(reason): \(transaction.problem ?? "accepted")")
            let command = KVCommand.transaction(
                session: 0, sequence: 0, owner: "", proposedAtMillis: 1, transaction)
            // Over the counts' limits the entry does not even decode.
            let applied = try kv.apply([log.entry(command)])
            guard case .refused(let why)? = applied.first?.outcome else {
                Issue.record("\(reason): applied as \(applied)")
                continue
            }
            #expect(why.contains(reason) || why.contains("not a KV command"), "\(why)")
        }
        #expect(try kv.crmScan(from: [0], to: [0xFF], limit: 10).entries.isEmpty)
    }

    @Test func encodingRoundTripsAndRefusesDamage() throws {
        let command = txn(
            3, 4, at: 99,
            [.absent(key: bytes("a")), .present(key: bytes("b")), .version(key: bytes("c"), 7), .keySet(2)],
            [
                .put(key: bytes("a"), value: bytes("1")), .putStamped(key: bytes("b"), value: []),
                .delete(key: bytes("c")), .deleteRange(from: bytes("d"), to: bytes("e")),
                .putAtLogTime(prefix: bytes("f/"), suffix: bytes("/g")),
            ])
        let encoded = command.encoded
        #expect(KVCommand(encoded: encoded) == command)
        #expect(command.sessionWrite == SessionWrite(session: 3, sequence: 4))
        for cut in 1..<encoded.count { #expect(KVCommand(encoded: Array(encoded.prefix(cut))) == nil) }
        #expect(KVCommand(encoded: encoded + [0]) == nil)
        // A condition count above the limit is refused before anything is read for it.
        var writer = BinaryWriter()
        writer.u8(2); writer.u8(5); writer.u64(0); writer.u64(0); writer.u64(0); writer.blob([])
        writer.u16(UInt16(TransactionLimits.maxConditions + 1))
        #expect(KVCommand(encoded: writer.bytes) == nil)
        // The largest transaction within the limits is shorter than the largest KV command.
        let largest = KVCommand.transaction(
            session: 1, sequence: 1, owner: String(repeating: "o", count: KVCommand.maxOwnerBytes),
            proposedAtMillis: 1,
            Transaction(
                conditions: Array(repeating: .version(key: [1], 1), count: TransactionLimits.maxConditions),
                operations: [
                    .putStamped(
                        key: [1],
                        value: [UInt8](
                            repeating: 0,
                            count: TransactionLimits.maxPayloadBytes - TransactionLimits.maxConditions
                                - TransactionLimits.maxOperations))
                ]
                    + Array(repeating: .delete(key: [1]), count: TransactionLimits.maxOperations - 1)))
        #expect(largest.problem == nil)
        #expect(largest.encoded.count <= KVCommand.maxEncodedBytes)
    }

    @Test func crmStateTravelsInSnapshotsAndTheStateHash() throws {
        let source = try KVDisk()
        let kv = try source.open()
        var log = LogWriter()
        _ = try kv.apply(
            log.entries([
                .write(session: 0, sequence: 0, proposedAtMillis: 1, .put(key: bytes("plain"), value: bytes("p"))),
                txn(
                    0, 0, [],
                    [.putStamped(key: bytes("r/1"), value: bytes("record")), .put(key: bytes("x/1"), value: [])]),
            ]))
        let otherDisk = try KVDisk()
        let withoutCRM = try otherDisk.open()
        var other = LogWriter()
        _ = try withoutCRM.apply(
            other.entries([
                .write(session: 0, sequence: 0, proposedAtMillis: 1, .put(key: bytes("plain"), value: bytes("p"))),
                txn(0, 0, [], [.put(key: bytes("x/1"), value: [])]),
            ]))
        #expect(try kv.stateHash() != withoutCRM.stateHash())
        let (position, data) = try kv.snapshotData()
        let target = try KVDisk()
        let copy = try target.open()
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(index: position.index, term: 1, configuration: Configuration(voters: [1])),
            data: data)
        try copy.check(snapshot: snapshot, expectedIndex: position.index)
        try copy.restore(from: snapshot, expectedIndex: position.index)
        #expect(try copy.stateHash() == kv.stateHash())
        #expect(
            try copy.crmValue(bytes("r/1")) == CRMValue(version: 2, updatedAtMillis: 5000, payload: bytes("record")))
    }
}

extension KVCommand {
    /// Why a transaction command would be refused, or nil.
    fileprivate var problem: String? {
        guard case .transaction(_, _, _, _, let transaction) = self else { return nil }
        return transaction.problem
    }
}
