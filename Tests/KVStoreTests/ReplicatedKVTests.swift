import BinaryCoding
import Foundation
import Logging
import Raft
import Sealing
import Storage
import Testing

@testable import KVStore

/// A state machine on real, sealed RocksDB in a temporary directory.
final class KVDisk: @unchecked Sendable {
    let path = NSTemporaryDirectory() + "crm-kv-" + UUID().uuidString
    let masterKey: FileMasterKeyProvider
    private var engine: StorageEngine?
    private var index: UInt64 = 0

    init() throws {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        masterKey = try FileMasterKeyProvider.generateKeyFile(at: path + "/master.key")
    }

    deinit {
        engine?.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    func open(_ options: ReplicatedKV.Options = ReplicatedKV.Options()) throws -> ReplicatedKV {
        engine?.close()
        var logger = Logger(label: "test.kv")
        logger.logLevel = .critical
        let opened = try StorageEngine.open(path: path + "/db", masterKey: masterKey, options: .compact, logger: logger)
        engine = opened
        return try ReplicatedKV(storage: opened, options: options, logger: logger)
    }
}

/// Numbers entries as a log would.
struct LogWriter {
    var next: UInt64 = 1
    var term: UInt64 = 1

    mutating func entries(_ commands: [KVCommand]) -> [Entry] {
        commands.map { command in
            defer { next += 1 }
            return Entry(term: term, index: next, data: command.encoded)
        }
    }

    mutating func entry(_ command: KVCommand) -> Entry { entries([command])[0] }

    mutating func empty() -> Entry {
        defer { next += 1 }
        return Entry(term: term, index: next)
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite struct ReplicatedKVTests {
    private func write(_ session: UInt64, _ sequence: UInt64, _ write: KVWrite, at time: UInt64 = 1000) -> KVCommand {
        .write(session: session, sequence: sequence, proposedAtMillis: time, write)
    }

    @Test func writesApplyInOrderAndReadBack() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        let opened = try kv.apply([log.empty(), log.entry(.openSession(proposedAtMillis: 1000))])
        #expect(opened == [ReplicatedKV.Applied(index: 2, outcome: .sessionOpened(2))])
        let results = try kv.apply(
            log.entries([
                write(2, 1, .put(key: bytes("a"), value: bytes("1"))),
                write(2, 2, .compareAndSwap(key: bytes("a"), expected: bytes("1"), new: bytes("2"))),
                write(2, 3, .compareAndSwap(key: bytes("a"), expected: bytes("1"), new: bytes("3"))),
                write(2, 4, .put(key: bytes("b"), value: bytes("x"))),
                write(2, 5, .delete(key: bytes("b"))),
                write(2, 6, .delete(key: bytes("b"))),
                write(2, 7, .compareAndSwap(key: bytes("c"), expected: nil, new: bytes("new"))),
            ]))
        #expect(
            results.map(\.outcome) == [
                .put, .compareAndSwap(swapped: true), .compareAndSwap(swapped: false), .put,
                .deleted(existed: true), .deleted(existed: false), .compareAndSwap(swapped: true),
            ])
        #expect(try kv.get(bytes("a")) == bytes("2"))
        #expect(try kv.get(bytes("b")) == nil)
        #expect(try kv.get(bytes("c")) == bytes("new"))
        #expect(kv.appliedIndex == 9)
    }

    /// A write retried with the same number is answered from the session, not applied again;
    /// an older number is refused; an unknown session is refused.
    @Test func retriedWritesApplyExactlyOnce() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 1))])
        let increment = write(1, 1, .compareAndSwap(key: bytes("counter"), expected: nil, new: bytes("1")))
        let first = try kv.apply([log.entry(increment)])
        let retry = try kv.apply([log.entry(increment)])
        #expect(first.map(\.outcome) == [.compareAndSwap(swapped: true)])
        #expect(retry.map(\.outcome) == [.compareAndSwap(swapped: true)])
        _ = try kv.apply([log.entry(write(1, 2, .put(key: bytes("counter"), value: bytes("2"))))])
        #expect(try kv.apply([log.entry(increment)]).map(\.outcome) == [.superseded(last: 2)])
        #expect(
            try kv.apply([log.entry(write(99, 1, .put(key: bytes("x"), value: [])))]).map(\.outcome) == [
                .unknownSession
            ])
        // Without a session (id 0) a write applies every time it commits.
        let blind = write(KVCommand.noSession, 0, .compareAndSwap(key: bytes("blind"), expected: nil, new: bytes("1")))
        #expect(
            try kv.apply(log.entries([blind, blind])).map(\.outcome) == [
                .compareAndSwap(swapped: true), .compareAndSwap(swapped: false),
            ])
        #expect(try kv.get(bytes("counter")) == bytes("2"))
    }

    /// State, sessions and the applied index survive a restart together; entries replayed
    /// from the log after it are skipped, not applied twice.
    @Test func stateSessionsAndPositionSurviveARestart() throws {
        let disk = try KVDisk()
        var kv = try disk.open()
        var log = LogWriter()
        let batch = log.entries([
            .openSession(proposedAtMillis: 5), write(1, 1, .put(key: bytes("k"), value: bytes("v"))),
        ])
        _ = try kv.apply(batch)
        kv = try disk.open()
        #expect(kv.appliedIndex == 2 && kv.sessionCount == 1)
        #expect(try kv.apply(batch).isEmpty)
        #expect(
            try kv.apply([log.entry(write(1, 1, .put(key: bytes("k"), value: bytes("v"))))]).map(\.outcome) == [.put])
        #expect(try kv.get(bytes("k")) == bytes("v"))
        #expect(kv.position.logClockMillis == 1000) // the largest proposer clock seen
    }

    /// The table is bounded (the least recently active session goes first) and idle sessions
    /// expire by log time; a member that reloads the table from disk agrees.
    @Test func sessionsAreBoundedAndExpireByLogTime() throws {
        let disk = try KVDisk()
        var options = ReplicatedKV.Options()
        options.maxSessions = 3
        options.sessionIdleTimeoutMillis = 1000
        var kv = try disk.open(options)
        var log = LogWriter()
        let opened = try kv.apply(log.entries((0..<3).map { _ in .openSession(proposedAtMillis: 100) }))
        let ids = opened.compactMap {
            if case .sessionOpened(let id) = $0.outcome { return id }; return nil
        }
        #expect(ids == [1, 2, 3])
        _ = try kv.apply([log.entry(write(1, 1, .put(key: bytes("a"), value: [1]), at: 200))])
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 300))]) // full: session 2 (least recent) goes
        #expect(
            try kv.apply([log.entry(write(2, 1, .put(key: bytes("a"), value: [2]), at: 300))]).map(\.outcome) == [
                .unknownSession
            ])
        #expect(kv.sessionCount == 3)

        kv = try disk.open(options)
        #expect(kv.sessionCount == 3)
        // Log time moves past the idle timeout of sessions 1, 3 and 5 (last active at 200–300).
        #expect(
            try kv.apply([log.entry(write(1, 2, .put(key: bytes("a"), value: [3]), at: 5000))]).map(\.outcome) == [
                .unknownSession
            ])
        #expect(kv.sessionCount == 0)
    }

    @Test func writesBeyondTheLimitsAreRefusedWhole() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 1))])
        let outcomes = try kv.apply(
            log.entries([
                write(1, 1, .put(key: [], value: [1])),
                write(1, 2, .put(key: [UInt8](repeating: 1, count: KVLimits.maxKeyBytes + 1), value: [1])),
                write(1, 3, .put(key: bytes("k"), value: [UInt8](repeating: 1, count: KVLimits.maxValueBytes + 1))),
            ])
        ).map(\.outcome)
        #expect(
            outcomes.allSatisfy {
                if case .refused = $0 { return true }; return false
            })
        #expect(try kv.apply([log.entry(write(1, 3, .put(key: bytes("k"), value: [])))]).first?.outcome != .put)
        let undecodable = try kv.apply([Entry(term: 1, index: log.next, data: [0x00, 0x07])])
        #expect(undecodable.first?.outcome == .refused("entry \(log.next) is not a KV command"))
    }

    /// An entry written by a newer member is never skipped: a member that cannot apply it stops
    /// applying (nothing of the call is written) and says which version it would need.
    @Test func aCommandNewerThanThisMemberStopsTheApply() throws {
        let kv = try ReplicatedKV(storage: MemoryStateStorage())
        var log = LogWriter()
        _ = try kv.apply([log.entry(write(0, 0, .put(key: bytes("a"), value: bytes("1"))))])
        for newer: [UInt8] in [[2, KVCommand.highestKind + 1, 0], [3, 1]] {
            let before = kv.appliedIndex
            let entries = [
                Entry(term: 1, index: before + 1, data: write(0, 0, .put(key: bytes("b"), value: [])).encoded),
                Entry(term: 1, index: before + 2, data: newer),
            ]
            #expect(throws: KVApplyError.commandTooNew(index: before + 2, format: newer[0], kind: newer[1])) {
                try kv.apply(entries)
            }
            #expect(try kv.appliedIndex == before && kv.get(bytes("b")) == nil)
        }
        let message = KVApplyError.commandTooNew(index: 9, format: 2, kind: 6).description
        #expect(message.contains("kind 6") && message.contains("kinds up to \(KVCommand.highestKind)"))
    }

    @Test func rangesAreOrderedBoundedAndResumable() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 1))])
        _ = try kv.apply(
            log.entries(
                (1...20).map {
                    write(1, UInt64($0), .put(key: bytes(String(format: "key%02d", $0)), value: bytes("\($0)")))
                }))
        let first = try kv.range(from: bytes("key05"), to: bytes("key15"), limit: 4)
        #expect(first.pairs.map { String(decoding: $0.key, as: UTF8.self) } == ["key05", "key06", "key07", "key08"])
        #expect(first.more)
        let rest = try kv.range(from: bytes("key09"), to: bytes("key15"), limit: 100)
        #expect(rest.pairs.count == 6 && !rest.more)
        #expect(try kv.range(from: [], to: nil, limit: 100).pairs.count == 20)
        #expect(try kv.range(from: bytes("z"), to: bytes("a"), limit: 10).pairs.isEmpty)
    }

    @Test func commandsRoundTripAndGarbageIsRefused() {
        let commands: [KVCommand] = [
            .openSession(proposedAtMillis: 42), .closeSession(session: 7, proposedAtMillis: 43),
            .write(session: 7, sequence: 9, proposedAtMillis: 44, .put(key: bytes("k"), value: bytes("v"))),
            .write(session: 7, sequence: 10, proposedAtMillis: 45, .delete(key: bytes("k"))),
            .write(
                session: 7, sequence: 11, proposedAtMillis: 46,
                .compareAndSwap(key: bytes("k"), expected: nil, new: bytes("n"))),
            .write(
                session: 7, sequence: 12, proposedAtMillis: 47,
                .compareAndSwap(key: bytes("k"), expected: bytes("n"), new: nil)),
            .openSession(id: 9_000_000_000, owner: "crm://client/app", proposedAtMillis: 48),
            .closeSession(session: 9_000_000_000, owner: "crm://client/app", proposedAtMillis: 49),
            .write(
                session: 9_000_000_000, sequence: 1, owner: "crm://member/2", proposedAtMillis: 50,
                .put(key: bytes("k"), value: bytes("v"))),
        ]
        for command in commands {
            #expect(KVCommand(encoded: command.encoded) == command)
            let encoded = command.encoded
            for length in 0..<encoded.count { #expect(KVCommand(encoded: Array(encoded.prefix(length))) == nil) }
            #expect(KVCommand(encoded: encoded + [0]) == nil)
        }
    }
}

@Suite struct KVSnapshotTests {
    @Test func aSnapshotRestoresTheSameStateAndHashElsewhere() throws {
        let source = try KVDisk()
        let kv = try source.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 10))])
        _ = try kv.apply(
            log.entries(
                (1...300).map {
                    .write(
                        session: 1, sequence: UInt64($0), proposedAtMillis: 20,
                        .put(key: bytes("key\($0)"), value: [UInt8](repeating: UInt8($0 % 256), count: 100)))
                }))
        let (position, data) = try kv.snapshotData()
        #expect(position.index == 301)
        let original = try kv.stateHash()

        let target = try KVDisk()
        let copy = try target.open()
        _ = try copy.apply([Entry(term: 1, index: 1, data: KVCommand.openSession(proposedAtMillis: 1).encoded)])
        #expect(throws: (any Error).self) { try copy.restore(from: inMemory(data), expectedIndex: 300) }
        #expect(throws: (any Error).self) {
            try copy.restore(from: inMemory(Array(data.prefix(20))), expectedIndex: 301)
        }
        // A snapshot cut in the middle of a record, or with bytes after the last, is refused by
        // the check that runs before the log takes a snapshot (the restore cannot undo batches).
        #expect(throws: (any Error).self) {
            try copy.check(snapshot: inMemory(Array(data.dropLast(50))), expectedIndex: 301)
        }
        #expect(throws: (any Error).self) { try copy.check(snapshot: inMemory(data + [0, 0, 0]), expectedIndex: 301) }
        try copy.check(snapshot: inMemory(data), expectedIndex: 301)
        try copy.restore(from: inMemory(data), expectedIndex: 301)
        #expect(copy.appliedIndex == 301 && copy.sessionCount == 1)
        #expect(try copy.stateHash() == original)
        #expect(try copy.get(bytes("key7")) == [UInt8](repeating: 7, count: 100))
        // The restored session still answers a retry from its record.
        let retry = try copy.apply([
            Entry(
                term: 1, index: 302,
                data: KVCommand.write(
                    session: 1, sequence: 300, proposedAtMillis: 30,
                    .put(key: bytes("key300"), value: [])
                ).encoded)
        ])
        #expect(retry.map(\.outcome) == [.put])
        #expect(try copy.get(bytes("key300")) == [UInt8](repeating: 44, count: 100))
    }

    /// Streamed from the pinned state, in pieces of a few bytes (records straddle every
    /// piece) and with values large enough that a page of the scan holds only a few: the copy
    /// is the same state.
    @Test func aSnapshotStreamsFromThePinnedStateInPiecesOfAnySize() throws {
        let source = try KVDisk()
        let kv = try source.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 10))])
        for round in 0..<4 {
            _ = try kv.apply(
                log.entries(
                    (1...10).map {
                        .write(
                            session: 1, sequence: UInt64(round * 10 + $0), proposedAtMillis: 20,
                            .put(key: bytes("big\(round)-\($0)"), value: [UInt8](repeating: UInt8($0), count: 900_000)))
                    }))
        }
        _ = try kv.apply(
            log.entries(
                (1...500).map {
                    .write(
                        session: 1, sequence: UInt64(40 + $0), proposedAtMillis: 20,
                        .put(key: bytes("small\($0)"), value: bytes("v\($0)")))
                }))
        let pinned = try kv.pinState()
        let original = try kv.stateHash()
        for pieceBytes in [7, 65_536, 3 << 20] {
            let target = try KVDisk()
            let copy = try target.open()
            let snapshot = Snapshot(
                metadata: SnapshotMetadata(
                    index: pinned.position.index, term: 1, configuration: Configuration(voters: [1])),
                data: [], source: PiecewiseSource(pinned, pieceBytes: pieceBytes))
            try copy.check(snapshot: snapshot, expectedIndex: pinned.position.index)
            try copy.restore(from: snapshot, expectedIndex: pinned.position.index)
            #expect(try copy.stateHash() == original, "pieces of \(pieceBytes) bytes")
            #expect(try copy.get(bytes("big3-10")) == [UInt8](repeating: 10, count: 900_000))
        }
    }

    /// The restore loads records as sorted table files, so the check refuses a snapshot whose
    /// records are not as a snapshot writes them: by prefix (values, sessions, members), keys
    /// ascending within each.
    @Test func aSnapshotWithRecordsOutOfOrderIsRefused() throws {
        func snapshot(_ keys: [String]) -> Snapshot {
            var writer = BinaryWriter()
            writer.u8(1)
            writer.u64(5)
            writer.u64(1)
            writer.u64(0)
            for key in keys {
                writer.blob(bytes(key))
                writer.blob(bytes("v"))
            }
            return inMemory(writer.bytes)
        }
        let disk = try KVDisk()
        let copy = try disk.open()
        try copy.check(snapshot: snapshot(["k/a", "k/b", "s/1", "m/1"]), expectedIndex: 5)
        for keys in [["k/b", "k/a"], ["k/a", "k/a"], ["s/1", "k/a"], ["m/1", "s/1"]] {
            #expect(throws: (any Error).self, "\(keys)") { try copy.check(snapshot: snapshot(keys), expectedIndex: 5) }
        }
        try copy.restore(from: snapshot(["k/a", "k/b"]), expectedIndex: 5)
        #expect(copy.appliedIndex == 5)
        #expect(try copy.get(bytes("b")) == bytes("v"))
    }

    @Test func differentStatesHashDifferently() throws {
        let disk = try KVDisk()
        let kv = try disk.open()
        var log = LogWriter()
        _ = try kv.apply([log.entry(.openSession(proposedAtMillis: 1))])
        let before = try kv.stateHash()
        _ = try kv.apply([
            log.entry(.write(session: 1, sequence: 1, proposedAtMillis: 1, .put(key: bytes("a"), value: bytes("b"))))
        ])
        let after = try kv.stateHash()
        #expect(before.hash != after.hash && after.index == before.index + 1)
        #expect(after.hash.count == 64)
    }
}

private func inMemory(_ data: [UInt8]) -> Snapshot {
    Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, configuration: Configuration(voters: [1])), data: data)
}

/// A source whose readers hand out at most `pieceBytes` at a time, whatever is asked.
private final class PiecewiseSource: SnapshotSource {
    let inner: any SnapshotSource
    let pieceBytes: Int

    init(_ inner: any SnapshotSource, pieceBytes: Int) {
        self.inner = inner
        self.pieceBytes = pieceBytes
    }

    func openReader() throws -> any SnapshotReader { Reader(try inner.openReader(), pieceBytes: pieceBytes) }
    func makeDurable() throws {}

    final class Reader: SnapshotReader {
        let inner: any SnapshotReader
        let pieceBytes: Int
        init(_ inner: any SnapshotReader, pieceBytes: Int) {
            self.inner = inner
            self.pieceBytes = pieceBytes
        }
        func read(maxBytes: Int) throws -> [UInt8]? { try inner.read(maxBytes: min(maxBytes, pieceBytes)) }
    }
}
