import AuditChain
import BinaryCoding
import CRMStateSupport
import Foundation
import KVStore
import Testing

@testable import CRM

/// Pruning stays below every collector's acknowledgement and what checkpoints checked, leaves a
/// base the rest verifies from, and loses a race to a concurrent pruning; a collector's copy
/// survives a torn tail and refuses a changed byte or another collector's directory.
@Suite struct AuditRetentionTests {
    private func trail(_ count: Int) throws -> (TestState, AuditTrail) {
        let state = try TestState()
        let trail = AuditTrail(kv: state.kv)
        for index in 0..<count {
            let entry = AuditEntry(
                action: "record.read", actor: "crm://user/\(index)", application: "crm://client/app", entity: .person,
                records: [try CRMID.random()], fields: [1])
            try apply(Transaction(operations: [trail.append(entry)]), state)
        }
        return (state, trail)
    }

    @discardableResult
    private func apply(_ transaction: Transaction, _ state: TestState) throws -> TransactionOutcome {
        guard case .transaction(let outcome) = try state.apply(transaction, at: 5000) else {
            throw RecordError.badRequest("not a transaction outcome")
        }
        return outcome
    }

    private func acknowledge(_ name: String, _ seq: UInt64, _ retention: AuditRetention, _ state: TestState) throws {
        let hash = try #require(try retention.hash(of: seq))
        let version = try retention.acknowledgement(name)?.version
        #expect(
            try apply(retention.acknowledge(name, AuditHead(seq: seq, hash: hash), readAt: version), state).isApplied)
    }

    @Test func pruningStaysBelowEveryCollectorAndTheCheckpointsAndLeavesAVerifiableBase() throws {
        let (state, trail) = try trail(30)
        let retention = AuditRetention(trail: trail)
        #expect(try retention.allowedBelow() == 0 && retention.plan(below: 100) == nil, "nothing without a collector")
        try acknowledge("vault-a", 20, retention, state)
        try acknowledge("vault-b", 12, retention, state)
        #expect(try retention.allowedBelow() == 0, "no checkpoint has checked anything yet")
        try apply(trail.checkpoint(try trail.head(), member: 1, certificate: [1], signature: [2]), state)
        #expect(try trail.checked() == 30 && retention.allowedBelow() == 12)
        #expect(try retention.collectors().map(\.collector) == ["vault-a", "vault-b"])

        let plan = try #require(try retention.plan(below: 100))
        #expect(plan.from == 1 && plan.to == 11 && plan.base == .empty)
        let newBase = AuditHead(seq: 11, hash: try #require(try retention.hash(of: 11)))
        let entry = AuditEntry(action: "audit.prune", actor: "crm://user/x", application: "crm://client/app")
        let prune = retention.prune(from: plan.from, to: newBase, baseVersion: plan.version, entry: entry)
        #expect(try apply(prune, state).isApplied)
        // A second pruning planned against the old base loses.
        #expect(!(try apply(prune, state).isApplied))
        #expect(try retention.base().head == newBase)
        #expect(try trail.links(from: 1, limit: 100).first?.seq == 12)
        // What is left verifies from the base up to the head, the pruning's own entry last.
        var verifier = AuditVerifier(after: newBase)
        for (seq, link, _) in try trail.links(from: 12, limit: 100) { verifier.check(seq: seq, link) }
        verifier.finish(at: try trail.head())
        #expect(verifier.problem == nil && verifier.checked == 21, "\(String(describing: verifier.problem))")
        // Nothing more may go until vault-b moves on.
        #expect(try retention.plan(below: 100) == nil)
        try acknowledge("vault-b", 25, retention, state)
        #expect(try retention.plan(below: 15).map { [$0.from, $0.to] } == [12, 14])
        #expect(!AuditRetention.isValidCollector("Vault") && !AuditRetention.isValidCollector(""))
    }

    @Test func aCollectorsCopyCutsATornTailAndRefusesAChangedByte() throws {
        let (_, trail) = try trail(12)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("collector-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let links = try trail.links(from: 1, limit: 100)
        func stored(_ range: ClosedRange<Int>) -> [(seq: UInt64, bytes: [UInt8], head: AuditHead)] {
            links[(range.lowerBound - 1)...(range.upperBound - 1)].map { ($0.seq, $0.stored, $0.link!.head) }
        }
        var copy = try CollectorCopy.open(directory, collector: "vault")
        try copy.append(stored(1...5))
        try copy.append(stored(6...12))
        #expect(copy.entries == 12 && copy.last == links[11].link!.head)

        // A crash between the log and the state leaves a tail: the next open cuts it.
        let log = directory.appendingPathComponent("chain.log")
        let handle = try FileHandle(forWritingTo: log)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0, 0, 1, 0, 7, 7]))
        try handle.close()
        let reopened = try CollectorCopy.open(directory, collector: "vault")
        #expect(reopened.entries == 12 && reopened.last == copy.last)

        #expect(throws: CollectorCopy.Problem.self) { _ = try CollectorCopy.open(directory, collector: "other") }
        // One changed byte inside an entry: the copy no longer opens, naming the entry.
        var bytes = try Data(contentsOf: log)
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: log)
        do {
            _ = try CollectorCopy.open(directory, collector: "vault")
            Issue.record("a changed copy opened")
        } catch let problem as CollectorCopy.Problem {
            #expect("\(problem)".contains("damaged") && "\(problem)".contains("entry"), "\(problem)")
        }
    }
}

extension TransactionOutcome {
    fileprivate var isApplied: Bool {
        if case .applied = self { return true }
        return false
    }
}
