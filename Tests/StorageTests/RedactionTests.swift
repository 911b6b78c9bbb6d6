import Foundation
import Sealing
import Testing

@testable import Storage

/// Keys may hold personal data: no error or integrity text names one (security review F9).
/// Those texts reach logs, alarms, `/readyz` and clients; `crmctl verify` (admin API only) lists
/// the damaged keys from `IntegrityProblem.key`.
@Suite struct RedactionTests {
    @Test func errorsAndIntegrityReportsNameFamiliesNotKeys() throws {
        let store = try TestStore()
        let engine = try store.open()
        let secretKey = Array("k/alice@example.com".utf8)
        try engine.put(.stateMachine, secretKey, randomBytes(200), durability: .synced)
        var raw = try #require(try engine.rawValue(.stateMachine, secretKey))
        raw[raw.count - 1] ^= 0x01
        try engine.writeRaw(.stateMachine, secretKey, raw)

        let forbidden = ["alice", secretKey.map { String(format: "%02x", $0) }.joined()]
        var texts: [String] = []
        do {
            _ = try engine.get(.stateMachine, secretKey)
            Issue.record("a damaged value was returned")
        } catch {
            texts.append("\(error)")
        }
        let report = try engine.verify()
        #expect(report.problemCount == 1)
        #expect(report.problems.first?.key == secretKey, "the admin API still gets the key")
        texts += report.problems.map(\.description) + [report.summary]
        #expect(
            report.summary == "1 damaged items (stateMachine 1)" || report.summary.hasPrefix("1 damaged items ("),
            "\(report.summary)")
        for text in texts {
            for word in forbidden { #expect(!text.contains(word), "\(text)") }
        }
        let corruption = StorageError.corruption(family: .raftLog, key: secretKey, message: "block checksum mismatch")
        for word in forbidden { #expect(!corruption.description.contains(word)) }
    }
}
