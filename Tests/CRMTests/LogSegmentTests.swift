import CRMStateSupport
import Foundation
import KVStore
import Raft
import Sealing
import Testing

@testable import Backup
@testable import CRM

/// Log segments for point-in-time recovery: entries read back exactly as written (subject keys
/// included) though the entry stream holds none of them; replayed onto the state before them
/// they give the same state; each damage is a named failure; a chain takes the longest copy that
/// verifies, follows terms, and never mixes in another lineage.
@Suite struct LogSegmentTests {
    final class Fixture {
        let crm: TestCRM
        let directory = NSTemporaryDirectory() + "crm-segments-" + UUID().uuidString
        let authorities: [[UInt8]]
        let writer: LogSegmentWriter
        let backupKey: FileMasterKeyProvider
        let target: String

        init(persons: Int) throws {
            crm = try TestCRM()
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            target = directory + "/target"
            let ca = try TestCertificates.make(in: directory, name: "ca", uri: nil, issuer: nil)
            let member = try TestCertificates.make(in: directory, name: "m1", uri: "crm://member/1", issuer: "ca")
            authorities = ECDSASignature.certificatesDER(pem: ca.certificate)
            backupKey = try FileMasterKeyProvider.generateKeyFile(at: directory + "/backup.key")
            writer = LogSegmentWriter(
                kek: backupKey, signer: BackupSigner(keyPEM: member.key, certificatePEM: member.certificate))
            for number in 0..<persons { _ = try crm.create(.person, ["last_name": .text("Segment \(number)")]) }
        }

        var entries: [Entry] { crm.state.entries }

        @discardableResult
        func segment(
            _ range: ClosedRange<Int>, lineage: String = "", into target: String? = nil
        ) throws
            -> LogSegmentManifest
        {
            let slice = Array(entries[(range.lowerBound - 1)...(range.upperBound - 1)])
            let previous = range.lowerBound > 1 ? entries[range.lowerBound - 2].term : 0
            return try writer.write(
                slice, previousTerm: previous, lineage: lineage,
                origin: .init(member: 1, binaryVersion: "test", createdAtMillis: 1), into: target ?? self.target)
        }

        func reader(_ listed: LogSegments.Listed) -> LogSegmentReader {
            LogSegmentReader(path: listed.path, kek: backupKey, authorities: authorities)
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    private func failure(_ body: () throws -> Any) -> String? { failureText(body) }

    @Test func entriesReadBackWholeAndReplayToTheSameState() throws {
        let fixture = try Fixture(persons: 6)
        let manifest = try fixture.segment(2...fixture.entries.count)
        #expect(manifest.redactedValues == 6, "one subject key per person is cut out")
        let listed = try #require(LogSegments.list(fixture.target).first)
        #expect(listed.firstIndex == 2 && listed.lastIndex == UInt64(fixture.entries.count))
        let (_, entries) = try fixture.reader(listed).entries()
        #expect(entries == Array(fixture.entries.dropFirst()))

        // The entry stream alone holds no subject key: every vault put in it is empty.
        for entry in entries {
            let (redacted, removed) = LogRedaction.redact(entry)
            if !removed.isEmpty {
                #expect(redacted != entry.data && LogRedaction.restore(redacted, removed) == entry.data)
            }
        }

        // Replayed after the first entry (the key set), the state is the original's.
        let replica = try TestState()
        replica.kv.applyThread.claim()
        _ = try replica.kv.apply([fixture.entries[0]])
        _ = try replica.kv.apply(entries)
        let original = try BackupDigest.of(try fixture.crm.state.kv.pinState())
        let replayed = try BackupDigest.of(try replica.kv.pinState())
        #expect(replayed.contentDigest == original.contentDigest && replayed.counts == original.counts)
    }

    @Test func eachDamageIsANamedFailure() throws {
        let fixture = try Fixture(persons: 3)
        try fixture.segment(2...3)
        try fixture.segment(4...fixture.entries.count)
        let segments = LogSegments.list(fixture.target)
        #expect(segments.count == 2)
        let (first, second) = (segments[0], segments[1])
        let chunk = first.path + "/log-000000.chunk"
        let original = try #require(FileManager.default.contents(atPath: chunk))

        var flipped = original
        flipped[flipped.count / 2] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: chunk))
        #expect(failure { try fixture.reader(first).entries() }?.contains("differs from the manifest's hash") == true)
        try original.prefix(original.count - 5).write(to: URL(fileURLWithPath: chunk))
        #expect(failure { try fixture.reader(first).entries() }?.contains("truncated") == true)
        try original.write(to: URL(fileURLWithPath: chunk))

        // The other segment's manifest (and its seal) in this one's directory.
        let manifest = first.path + "/manifest.json", seal = first.path + "/manifest.seal"
        let saved = (
            try Data(contentsOf: URL(fileURLWithPath: manifest)), try Data(contentsOf: URL(fileURLWithPath: seal))
        )
        try FileManager.default.removeItem(atPath: manifest)
        try FileManager.default.removeItem(atPath: seal)
        try FileManager.default.copyItem(atPath: second.path + "/manifest.json", toPath: manifest)
        try FileManager.default.copyItem(atPath: second.path + "/manifest.seal", toPath: seal)
        #expect(failure { try fixture.reader(first).entries() }?.contains("swapped") == true)
        try saved.0.write(to: URL(fileURLWithPath: manifest))
        try saved.1.write(to: URL(fileURLWithPath: seal))

        // The subject keys' chunk gone: named, not a silent replay without them.
        let keys = first.path + "/log-keys-000000.chunk"
        let keyChunk = try #require(FileManager.default.contents(atPath: keys))
        try FileManager.default.removeItem(atPath: keys)
        #expect(failure { try fixture.reader(first).entries() }?.contains("log-keys-000000.chunk is missing") == true)
        try keyChunk.write(to: URL(fileURLWithPath: keys))

        // Another backup key.
        let wrong = try FileMasterKeyProvider.generateKeyFile(at: fixture.directory + "/wrong.key")
        let stranger = LogSegmentReader(path: first.path, kek: wrong, authorities: fixture.authorities)
        #expect(failure { try stranger.entries() }?.contains("does not open its data key") == true)
        #expect(failure { try fixture.reader(first).entries() } == nil)
    }

    @Test func aChainTakesTheLongestCopyThatHoldsAndKeepsToItsLineage() throws {
        let fixture = try Fixture(persons: 4)
        let last = fixture.entries.count
        let other = fixture.directory + "/other"
        // Target 1: 2...3 and 4...last; target 2: a longer 2...last whose chunk is damaged,
        // and a segment of another lineage starting at 2.
        try fixture.segment(2...3)
        try fixture.segment(4...last)
        try fixture.segment(2...last, into: other)
        try fixture.segment(2...last, lineage: String(repeating: "ab", count: 16), into: other)
        let damaged = try #require(LogSegments.list(other).first { fixture.reader($0).isLineage("") })
        let chunk = damaged.path + "/log-000000.chunk"
        var bytes = try #require(FileManager.default.contents(atPath: chunk))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: chunk))

        let chain = SegmentChain(
            targets: [fixture.target, other], lineage: "", kek: fixture.backupKey, authorities: fixture.authorities)
        var seen: [ClosedRange<UInt64>] = []
        let end = try chain.forEachSegment(after: (1, 1)) { entries in
            seen.append(entries[0].index...entries[entries.count - 1].index)
            return true
        }
        // The damaged long copy failed; the other lineage was never taken; the short ones chain.
        #expect(seen == [2...3, 4...UInt64(last)] && end.index == UInt64(last))
        // A chain after a term it does not follow finds nothing.
        let none = try chain.forEachSegment(after: (1, 7)) { _ in true }
        #expect(none.index == 1)
    }
}

extension LogSegmentReader {
    fileprivate func isLineage(_ lineage: String) -> Bool { (try? openManifest().0.lineage) == lineage }
}
