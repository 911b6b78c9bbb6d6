import ArgumentParser
import Backup
import CRM
import ClusterHarness
import Foundation
import KVStore
import Logging
import Raft
import Sealing
import Storage

/// Backup, deep verify and restore of a CRM state on the real engine: persons with activities
/// written through `RecordChanges` into a RocksDB store (each person with its subject key, each
/// activity sealed under its person's), then one backup of that state, a deep verify of it, and
/// a restore into a new store, each timed. Then the log that made the state is archived as log
/// segments (subject keys cut out) and replayed from them onto an empty store, as a restore to a
/// point in time replays them, and the replayed state must be the source's.
struct BackupBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Backup, deep verify and restore throughput on a RocksDB store of persons with activities.",
        discussion: "The last line is `backup: records=N backup_mb_s=.. restore_mb_s=.. ratio=..`.")

    @Option(help: "Persons to write.") var persons = 100_000
    @Option(help: "Activities per person (a note with a title and a body, targeting the person).")
    var activities = 2
    @Option(help: "Scratch directory (default: a new directory under the system temp dir, removed afterwards).")
    var directory: String?

    func validate() throws {
        guard (1...10_000_000).contains(persons), (0...100).contains(activities) else {
            throw ValidationError("--persons is 1 to 10000000, --activities 0 to 100")
        }
    }

    func run() throws {
        let scratch = directory ?? (NSTemporaryDirectory() + "crm-bench-backup-" + UUID().uuidString)
        try FileManager.default.createDirectory(
            atPath: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: scratch) } }
        var logger = Logger(label: "crm.bench")
        logger.logLevel = .warning
        let signer = try Self.memberSigner(in: scratch)

        let source = try StorageEngine.open(
            path: scratch + "/source", masterKey: try FileMasterKeyProvider.generateKeyFile(at: scratch + "/m1.key"),
            logger: logger)
        defer { source.close() }
        let kv = try ReplicatedKV(storage: source, logger: logger)
        let filled = Date()
        let (written, log) = try fill(kv, kek: try FileMasterKeyProvider.generateKeyFile(at: scratch + "/crm.key"))
        try source.compact()
        let live = Self.bytes(under: scratch + "/source", ending: ".sst")
        print(
            "backup benchmark: \(persons) persons with \(activities) activities each (\(written) records) written in "
                + String(format: "%.1f s", Date().timeIntervalSince(filled))
                + "; live store \(Self.mb(live)) MB of table files (\(Self.mb(Self.bytes(under: scratch + "/source"))) MB with logs)"
        )

        let target = scratch + "/backups"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let backupKey = try FileMasterKeyProvider.generateKeyFile(at: scratch + "/backup.key")
        let id = try BackupID.random()
        var started = Date()
        let manifest = try BackupWriter(kek: backupKey, signer: signer.signer).write(
            try kv.pinState(), id: id, origin: .init(member: 1, binaryVersion: "bench", createdAtMillis: 1),
            into: target)
        let backupSeconds = Date().timeIntervalSince(started)
        let raw = (manifest.data + manifest.keys).reduce(UInt64(0)) { $0 + UInt64($1.rawBytes) }
        let stored = Self.bytes(under: BackupStore.path(target, id))
        let records = (manifest.data + manifest.keys).reduce(0) { $0 + Int($1.records) }
        let verifier = BackupVerifier(
            directory: BackupStore.path(target, id), kek: backupKey, authorities: signer.authorities)
        started = Date()
        _ = try verifier.verify(deep: true)
        let verifySeconds = Date().timeIntervalSince(started)

        let restored = try StorageEngine.open(
            path: scratch + "/restored", masterKey: try FileMasterKeyProvider.generateKeyFile(at: scratch + "/m2.key"),
            logger: logger)
        defer { restored.close() }
        let restoredKV = try ReplicatedKV(storage: restored, logger: logger)
        started = Date()
        let (_, next) = try verifier.restoredRecords()
        let loaded = try restoredKV.restore(
            at: .init(index: manifest.appliedIndex, term: manifest.term, logClockMillis: manifest.logTimeMillis)
        ) { try next().map { (key: $0.0, value: $0.1) } }
        let readBack = try BackupDigest.of(try restoredKV.pinState())
        let restoreSeconds = Date().timeIntervalSince(started)
        guard readBack.contentDigest == manifest.contentDigest, readBack.counts == manifest.counts else {
            throw ValidationError("the restored store differs from the backup")
        }
        print(
            "backup: \(records) records, \(Self.mb(raw)) MB encoded -> \(Self.mb(stored)) MB on disk in "
                + String(
                    format: "%.2f s (%.1f MB/s, %.0f records/s)", backupSeconds, Double(raw) / 1e6 / backupSeconds,
                    Double(records) / backupSeconds))
        print(
            "verify --deep: " + String(format: "%.2f s (%.1f MB/s)", verifySeconds, Double(raw) / 1e6 / verifySeconds))
        print(
            "restore: \(loaded) records loaded and read back in "
                + String(
                    format: "%.2f s (%.1f MB/s, %.0f records/s)", restoreSeconds, Double(raw) / 1e6 / restoreSeconds,
                    Double(loaded) / restoreSeconds))
        try segments(log, source: kv, signer: signer, backupKey: backupKey, scratch: scratch, logger: logger)
        print(
            "backup: records=\(records) backup_mb_s="
                + String(
                    format: "%.1f restore_mb_s=%.1f backup_over_live=%.2f", Double(raw) / 1e6 / backupSeconds,
                    Double(raw) / 1e6 / restoreSeconds, Double(stored) / Double(max(live, 1))))
    }

    /// The log after its first entry (the key set) archived as segments of at most 64 MiB, then
    /// replayed from them onto a store holding only that first entry; timed, and checked.
    private func segments(
        _ log: [Entry], source: ReplicatedKV, signer: (signer: BackupSigner, authorities: [[UInt8]]),
        backupKey: FileMasterKeyProvider, scratch: String, logger: Logger
    ) throws {
        let target = scratch + "/segments-target"
        let writer = LogSegmentWriter(kek: backupKey, signer: signer.signer)
        var started = Date()
        var (start, bytes, segments) = (1, 0, 0)
        while start < log.count {
            var end = start
            var size = 0
            while end < log.count, size < LogSegments.maxSegmentBytes {
                size += log[end].sizeBytes
                end += 1
            }
            _ = try writer.write(
                Array(log[start..<end]), previousTerm: log[start - 1].term, lineage: "",
                origin: .init(member: 1, binaryVersion: "bench", createdAtMillis: 1), into: target)
            (start, bytes, segments) = (end, bytes + size, segments + 1)
        }
        let archiveSeconds = Date().timeIntervalSince(started)
        let stored = Self.bytes(under: LogSegments.directory(target))
        let replica = try StorageEngine.open(
            path: scratch + "/replayed", masterKey: try FileMasterKeyProvider.generateKeyFile(at: scratch + "/m3.key"),
            logger: logger)
        defer { replica.close() }
        let replayed = try ReplicatedKV(storage: replica, logger: logger)
        replayed.applyThread.claim()
        _ = try replayed.apply([log[0]])
        started = Date()
        let chain = SegmentChain(targets: [target], lineage: "", kek: backupKey, authorities: signer.authorities)
        let reached = try chain.forEachSegment(after: (log[0].index, log[0].term)) { entries in
            for batch in stride(from: 0, to: entries.count, by: 1024) {
                _ = try replayed.apply(Array(entries[batch..<min(entries.count, batch + 1024)]))
            }
            return true
        }
        let replaySeconds = Date().timeIntervalSince(started)
        source.applyThread.claim()
        let expected = try BackupDigest.of(try source.pinState())
        let got = try BackupDigest.of(try replayed.pinState())
        guard reached.index == log[log.count - 1].index, got.contentDigest == expected.contentDigest else {
            throw ValidationError("the state replayed from the segments differs from the source")
        }
        let entries = Double(log.count - 1)
        print(
            "log segments: \(log.count - 1) entries, \(Self.mb(UInt64(bytes))) MB in \(segments) segments -> \(Self.mb(stored)) MB on disk, archived in "
                + String(
                    format:
                        "%.2f s (%.1f MB/s, %.0f entries/s); replayed in %.2f s (%.1f MB/s, %.0f entries/s), same digest",
                    archiveSeconds, Double(bytes) / 1e6 / archiveSeconds, entries / archiveSeconds, replaySeconds,
                    Double(bytes) / 1e6 / replaySeconds, entries / replaySeconds))
    }

    /// Persons with their activities, created as the records API creates them, applied in
    /// batches of log entries; answers how many records, and the log entries.
    private func fill(_ kv: ReplicatedKV, kek: FileMasterKeyProvider) throws -> (Int, [Entry]) {
        kv.applyThread.claim()
        var index: UInt64 = 0
        var pending: [Entry] = []
        var log: [Entry] = []
        func add(_ transaction: Transaction) throws {
            index += 1
            let command = KVCommand.transaction(
                session: 0, sequence: 0, owner: "crm://client/bench", proposedAtMillis: 1_000 + index, transaction)
            pending.append(Entry(term: 1, index: index, data: command.encoded))
            if pending.count == 256 { try flush() }
        }
        func flush() throws {
            log += pending
            for applied in try kv.apply(pending) {
                guard case .transaction(.applied) = applied.outcome else {
                    throw ValidationError("a benchmark write was not applied: \(applied.outcome)")
                }
            }
            pending.removeAll(keepingCapacity: true)
        }
        try add(try KeySetChanges.first(kek: kek).0)
        try flush()
        let changes = RecordChanges(keys: CRMKeyState(kek: .success(kek), kv: kv), kv: kv)
        var records = 0
        for number in 0..<persons {
            let person = try CRMID.random()
            try add(
                try changes.create(
                    .person, id: person,
                    fields: [
                        "first_name": .text("Person"), "last_name": .text("Number \(number)"),
                        "emails": .texts(["person\(number)@example.com"]), "city": .text("Lisbon"),
                    ], owner: "crm://user/bench", teams: [], principal: "crm://client/bench", now: 1_000))
            // A person's create and its activities depend on each other's subject key: apply first.
            try flush()
            records += 1
            for activity in 0..<activities {
                try add(
                    try changes.create(
                        .activity, id: try CRMID.random(),
                        fields: [
                            "kind": .text("note"), "title": .text("Call \(activity)"),
                            "body": .text("Discussed the renewal and the next steps, call number \(activity)."),
                            "targets": .targets([RecordRef(entity: .person, id: person)]),
                        ], owner: "crm://user/bench", teams: [], principal: "crm://client/bench", now: 1_000))
                records += 1
            }
        }
        try flush()
        return (records, log)
    }

    /// A CA and member 1's key and certificate, made with the openssl tool.
    static func memberSigner(in directory: String) throws -> (signer: BackupSigner, authorities: [[UInt8]]) {
        func openssl(_ arguments: [String]) throws { try Programs.run("/usr/bin/openssl", arguments) }
        for name in ["ca", "member"] {
            try openssl([
                "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                "\(directory)/\(name).key",
            ])
        }
        try openssl([
            "req", "-new", "-x509", "-key", "\(directory)/ca.key", "-subj", "/CN=ca", "-days", "2", "-out",
            "\(directory)/ca.pem",
        ])
        try openssl([
            "req", "-new", "-x509", "-key", "\(directory)/member.key", "-subj", "/CN=m1", "-days", "2", "-out",
            "\(directory)/member.pem", "-CA", "\(directory)/ca.pem", "-CAkey", "\(directory)/ca.key", "-addext",
            "subjectAltName=URI:crm://member/1",
        ])
        func read(_ name: String) -> [UInt8] {
            Array(FileManager.default.contents(atPath: "\(directory)/\(name)") ?? Data())
        }
        return (
            BackupSigner(keyPEM: read("member.key"), certificatePEM: read("member.pem")),
            ECDSASignature.certificatesDER(pem: read("ca.pem"))
        )
    }

    static func bytes(under path: String, ending suffix: String = "") -> UInt64 {
        let files = (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).filter {
            $0.hasSuffix(suffix)
        }
        return files.reduce(UInt64(0)) { total, name in
            total + ((try? FileManager.default.attributesOfItem(atPath: path + "/" + name))?[.size] as? UInt64 ?? 0)
        }
    }

    static func mb(_ bytes: UInt64) -> String { String(format: "%.1f", Double(bytes) / 1e6) }
}
