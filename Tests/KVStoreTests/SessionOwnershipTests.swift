import Foundation
import Raft
import Testing

@testable import KVStore

/// Sessions belong to the identity that opened them (security review F4).
@Suite struct SessionOwnershipTests {
    static let alice = "crm://client/alice"
    static let mallory = "crm://client/mallory"

    private func put(_ session: UInt64, _ sequence: UInt64, _ key: String, owner: String) -> KVCommand {
        .write(
            session: session, sequence: sequence, owner: owner, proposedAtMillis: 1000,
            .put(key: bytes(key), value: bytes("v")))
    }

    /// The review's trigger: Mallory writes sequence 1 in Alice's session first. Before, the
    /// state machine answered Alice's own sequence 1 from Mallory's record (`.put`) and never
    /// applied it: an acknowledged write lost. Now Mallory is refused and Alice's write applies.
    @Test func anotherIdentityCannotConsumeASessionsSequenceNumbers() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        let opened = try kv.apply([log.entry(.openSession(id: 424242, owner: Self.alice, proposedAtMillis: 1000))])
        #expect(opened.map(\.outcome) == [.sessionOpened(424242)])
        let hijack = try kv.apply([log.entry(put(424242, 1, "mallory", owner: Self.mallory))])
        #expect(hijack.map(\.outcome) == [.notSessionOwner])
        let own = try kv.apply([log.entry(put(424242, 1, "alice", owner: Self.alice))])
        #expect(own.map(\.outcome) == [.put])
        #expect(try kv.get(bytes("alice")) == bytes("v"), "Alice's acknowledged write is there")
        #expect(try kv.get(bytes("mallory")) == nil)
        // Nor may Mallory close it.
        #expect(
            try kv.apply([log.entry(.closeSession(session: 424242, owner: Self.mallory, proposedAtMillis: 1000))]).map(
                \.outcome) == [.notSessionOwner])
        #expect(kv.sessionCount == 1)
        #expect(
            try kv.apply([log.entry(.closeSession(session: 424242, owner: Self.alice, proposedAtMillis: 1000))]).map(
                \.outcome) == [.sessionClosed])
    }

    /// One identity holds at most its quota: opening more closes its own least recently active
    /// session, never another identity's.
    @Test func oneIdentitysSessionsAreBoundedWithoutTouchingOthers() throws {
        let disk = try KVDisk()
        var options = ReplicatedKV.Options()
        options.maxSessionsPerOwner = 3
        let kv = try disk.open(options)
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(id: 1, owner: Self.alice, proposedAtMillis: 1))])
        for id: UInt64 in 10...14 {
            _ = try kv.apply([log.entry(.openSession(id: id, owner: Self.mallory, proposedAtMillis: 1))])
        }
        #expect(kv.sessionCount == 4, "3 of Mallory's and Alice's one")
        #expect(try kv.apply([log.entry(put(1, 1, "a", owner: Self.alice))]).map(\.outcome) == [.put])
        #expect(
            try kv.apply([log.entry(put(10, 1, "m", owner: Self.mallory))]).map(\.outcome) == [.unknownSession],
            "Mallory's oldest went")
        #expect(try kv.apply([log.entry(put(14, 1, "m", owner: Self.mallory))]).map(\.outcome) == [.put])
        // A reopened store keeps owners (and the bound).
        let reopened = try disk.open(options)
        #expect(reopened.sessionCount == 4)
        var later = LogWriter(next: log.next)
        #expect(
            try reopened.apply([later.entry(put(1, 2, "a2", owner: Self.mallory))]).map(\.outcome) == [.notSessionOwner]
        )
    }

    @Test func aSessionIDInUseIsRefused() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(id: 77, owner: Self.alice, proposedAtMillis: 1))])
        let again = try kv.apply([log.entry(.openSession(id: 77, owner: Self.mallory, proposedAtMillis: 1))])
        guard case .refused(let why)? = again.first?.outcome else {
            Issue.record("\(again)")
            return
        }
        #expect(why.contains("in use"))
    }

    /// Entries written before owners existed (version 1) still decode and apply: their sessions
    /// have no owner and are numbered by index; new writes, which carry owners, cannot use them.
    @Test func versionOneEntriesStillApply() throws {
        let open = try #require(KVCommand.openSession(proposedAtMillis: 5).encodedAsVersion1)
        #expect(open.first == 1)
        #expect(KVCommand(encoded: open) == .openSession(id: 0, owner: "", proposedAtMillis: 5))
        let disk = try KVDisk()
        let kv = try disk.open()
        let opened = try kv.apply([Entry(term: 1, index: 1, data: open)])
        #expect(opened.map(\.outcome) == [.sessionOpened(1)])
        var log = LogWriter(next: 2)
        #expect(try kv.apply([log.entry(put(1, 1, "x", owner: Self.alice))]).map(\.outcome) == [.notSessionOwner])
    }

    @Test func randomSessionIDsAreNonZeroAndExactInJSON() {
        let ids = (0..<1000).map { _ in KVCommand.randomSessionID() }
        #expect(ids.allSatisfy { $0 != 0 && $0 < (1 << 53) })
        #expect(Set(ids).count == 1000)
    }

    /// Owners, member addresses and stored refusals are UTF-8 text: bytes that are not valid
    /// UTF-8 do not decode (before, they decoded with U+FFFD in place of the bad bytes, to a
    /// command that encodes to other bytes; the fuzzer found it through member addresses).
    @Test func textThatIsNotUTF8DoesNotDecode() {
        let owner = KVCommand.closeSession(session: 7, owner: "crm://client/ab", proposedAtMillis: 1).encoded
        var bad = owner
        bad[bad.count - 1] = 0xC1
        #expect(KVCommand(encoded: owner) != nil)
        #expect(KVCommand(encoded: bad) == nil)

        let addresses = KVCommand.memberEndpoints(MemberAddresses(id: 4, peer: "h:1", client: "h:2", admin: "h:3"))
            .encoded
        var badAddress = addresses
        badAddress[badAddress.count - 1] = 0xFF
        #expect(KVCommand(encoded: addresses) != nil)
        #expect(KVCommand(encoded: badAddress) == nil)

        let session = SessionTable.Session(
            owner: "crm://client/ab", lastSequence: 1, lastOutcome: .refused("no"),
            activeAtIndex: 2, activeAtMillis: 3)
        var badRefusal = SessionCoding.encode(session)
        badRefusal[badRefusal.count - 1] = 0x80
        #expect(SessionCoding.decode(SessionCoding.encode(session)) == session)
        #expect(SessionCoding.decode(badRefusal) == nil)
    }
}
