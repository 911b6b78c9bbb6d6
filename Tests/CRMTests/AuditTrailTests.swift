import AuditChain
import BinaryCoding
import CRMStateSupport
import KVStore
import Testing

@testable import CRM

@Suite struct AuditTrailTests {
    /// A state with `count` entries appended, one transaction each (the third carries two).
    private func trail(_ count: Int) throws -> (TestState, AuditTrail) {
        let state = try TestState()
        let trail = AuditTrail(kv: state.kv)
        var appended = 0
        while appended < count {
            let two = appended == 2 && count - appended >= 2
            let entries = (0..<(two ? 2 : 1)).map { number in
                AuditEntry(
                    action: "record.update", actor: "crm://user/\(appended + number)", application: "crm://client/app",
                    entity: .deal, records: [try! CRMID.random()], fields: [1, 2])
            }
            let operations =
                [TransactionOperation.put(key: Array("x/\(appended)".utf8), value: [1])]
                + entries.map(trail.append)
            guard case .transaction(.applied) = try state.apply(Transaction(operations: operations), at: 5000) else {
                throw RecordError.badRequest("the append did not apply")
            }
            appended += entries.count
        }
        return (state, trail)
    }

    private func verify(_ trail: AuditTrail) throws -> AuditVerifier {
        var verifier = AuditVerifier(after: .empty)
        for (seq, link, _) in try trail.links(from: 1, limit: 10_000) where !verifier.check(seq: seq, link) { break }
        verifier.finish(at: try trail.head())
        return verifier
    }

    @Test func theApplyNumbersLinksAndHashesEveryEntryWithItsChange() throws {
        let (state, trail) = try trail(6)
        let head = try trail.head()
        #expect(head.seq == 6)
        let links = try trail.links(from: 1, limit: 100)
        #expect(links.map(\.seq) == [1, 2, 3, 4, 5, 6])
        #expect(links.compactMap(\.link).map(\.logIndex) == [1, 2, 3, 3, 4, 5], "two entries of one transaction")
        #expect(links.first?.link?.prev == AuditChain.genesis && links.last?.link?.hash == head.hash)
        let entry = try #require(links.first?.link.flatMap { AuditEntry(encoded: $0.body) })
        #expect(entry.action == "record.update" && entry.actor == "crm://user/0" && entry.fields == [1, 2])
        let verifier = try verify(trail)
        #expect(verifier.problem == nil && verifier.checked == 6)

        // A transaction whose condition fails appends nothing.
        let failed = Transaction(
            conditions: [.present(key: Array("nothing".utf8))],
            operations: [trail.append(AuditEntry(action: "record.create", actor: "a", application: "b"))])
        guard case .transaction(.conditionFailed) = try state.apply(failed) else {
            Issue.record("a failed condition applied")
            return
        }
        #expect(try trail.head() == head)
    }

    @Test func verifyNamesTheFirstFlippedDeletedReorderedOrTruncatedEntry() throws {
        func tampered(_ change: (AuditTrail) throws -> [TransactionOperation]) throws -> (UInt64, String)? {
            let (state, trail) = try trail(6)
            try state.apply(Transaction(operations: try change(trail)))
            return try verify(trail).problem.map { ($0.seq, $0.why) }
        }
        func stored(_ trail: AuditTrail, _ seq: UInt64) throws -> [UInt8] {
            try #require(try trail.links(from: seq, limit: 1).first?.link).encoded
        }
        let key = { (trail: AuditTrail, seq: UInt64) in AuditChain.entryKey(trail.chain, seq) }

        let flipped = try tampered { trail in
            var bytes = try stored(trail, 3)
            bytes[bytes.count - 33] ^= 1 // the body's last byte
            return [.put(key: key(trail, 3), value: bytes)]
        }
        #expect(
            flipped?.0 == 3 && flipped?.1.contains("does not match its hash") == true, "\(String(describing: flipped))")

        let rehashed = try tampered { trail in
            // An edit whose own hash is made again still breaks the next entry's link.
            var link = try #require(AuditLink(encoded: try stored(trail, 2)))
            link.body = AuditEntry(action: "record.read", actor: "x", application: "y").encoded
            link.hash = link.computedHash
            return [.put(key: key(trail, 2), value: link.encoded)]
        }
        #expect(rehashed?.0 == 3 && rehashed?.1.contains("does not link to entry 2") == true)

        let deleted = try tampered { trail in [.delete(key: key(trail, 4))] }
        #expect(deleted?.0 == 4 && deleted?.1.contains("missing") == true, "\(String(describing: deleted))")

        let reordered = try tampered { trail in
            [
                .put(key: key(trail, 2), value: try stored(trail, 5)),
                .put(key: key(trail, 5), value: try stored(trail, 2)),
            ]
        }
        #expect(reordered?.0 == 2 && reordered?.1.contains("another number") == true)

        let truncated = try tampered { trail in [.delete(key: key(trail, 5)), .delete(key: key(trail, 6))] }
        #expect(truncated?.0 == 5 && truncated?.1.contains("the head is 6") == true, "\(String(describing: truncated))")

        let garbage = try tampered { trail in [.put(key: key(trail, 1), value: [9, 9, 9])] }
        #expect(garbage?.0 == 1 && garbage?.1.contains("does not decode") == true)
    }

    @Test func entriesRoundTripAndRefuseDamageAndBoundTheirTexts() throws {
        let entry = AuditEntry(
            action: "record.read", actor: "crm://user/1", application: "crm://client/app", entity: .person,
            records: [try CRMID.random()], subjects: [try CRMID.random()], fields: [3, 1000], requestID: "r-1",
            outcome: .denied, reason: "outside scope")
        let encoded = entry.encoded
        #expect(AuditEntry(encoded: encoded) == entry)
        for cut in 0..<encoded.count { #expect(AuditEntry(encoded: Array(encoded.prefix(cut))) == nil) }
        #expect(AuditEntry(encoded: encoded + [0]) == nil)
        // Long texts are cut at a character boundary and still decode.
        let long = AuditEntry(action: "x", actor: String(repeating: "é", count: 300), application: "a")
        #expect(AuditEntry(encoded: long.encoded)?.actor.unicodeScalars.count == 128)
        // An entry larger than the bound is refused by the transaction, whole.
        let oversized = Transaction(operations: [
            .appendAudit(chain: AuditTrail(kv: try TestState().kv).chain, body: [UInt8](repeating: 0, count: 20_000))
        ])
        #expect(oversized.problem?.contains("audit entry") == true)
    }
}
