import AuditChain
import Foundation
import Raft
import Sealing

/// Checks and reads one log segment where it lies: its manifest is this directory's (id and
/// index range), signed by a member the cluster CA issued and MACed under its data key; every
/// chunk has the manifest's size and hash, opens and decodes; the entries run from the first
/// index to the last without a gap, in terms that never fall, from the previous term to the
/// last; each cut-out value goes back into the entry it came from.
public struct LogSegmentReader: Sendable {
    public let path: String
    public let kek: any MasterKeyProvider
    public let authorities: [[UInt8]]

    public init(path: String, kek: any MasterKeyProvider, authorities: [[UInt8]]) {
        self.path = path
        self.kek = kek
        self.authorities = authorities
    }

    /// The segment's entries, whole (cut-out values put back); a named problem when anything
    /// does not hold.
    public func entries() throws -> (manifest: LogSegmentManifest, entries: [Entry]) {
        let (manifest, id, cipher) = try openManifest()
        let files = BackupVerifier(directory: path, kek: kek, authorities: authorities)
        var removed: [UInt64: [LogRedaction.Removed]] = [:]
        for (number, chunk) in manifest.logKeys.enumerated() {
            let raw = try BackupChunks.open(
                try files.chunkFile(chunk), chunk, id, .logKeys, index: number, cipher: cipher)
            try BackupChunks.forEachRecord(in: raw, chunk) { key, value in
                guard let (index, operation) = SegmentRecords.removed(key: key) else {
                    throw BackupProblem("\(chunk.file): a cut-out value's key does not decode")
                }
                removed[index, default: []].append(LogRedaction.Removed(operation: operation, value: value))
            }
        }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(min(manifest.lastIndex - manifest.firstIndex + 1, 1 << 20)))
        var term = manifest.previousTerm
        for (number, chunk) in manifest.log.enumerated() {
            let raw = try BackupChunks.open(try files.chunkFile(chunk), chunk, id, .log, index: number, cipher: cipher)
            try BackupChunks.forEachRecord(in: raw, chunk) { key, data in
                guard var entry = SegmentRecords.entry(key: key, data: data) else {
                    throw BackupProblem("\(chunk.file): an entry's key does not decode")
                }
                let expected = manifest.firstIndex + UInt64(entries.count)
                guard entry.index == expected, entry.term >= term else {
                    throw BackupProblem(
                        "\(chunk.file): entry \(entry.index) (term \(entry.term)) does not follow \(expected - 1) (term \(term))"
                    )
                }
                if let values = removed.removeValue(forKey: entry.index) {
                    guard let whole = LogRedaction.restore(entry.data, values) else {
                        throw BackupProblem("\(chunk.file): entry \(entry.index)'s cut-out values do not fit it")
                    }
                    entry.data = whole
                }
                term = entry.term
                entries.append(entry)
            }
        }
        guard let last = entries.last, last.index == manifest.lastIndex, last.term == manifest.lastTerm else {
            throw BackupProblem(
                "the segment's entries end at \(entries.last?.index ?? 0), its manifest says \(manifest.lastIndex) (term \(manifest.lastTerm))"
            )
        }
        guard removed.isEmpty else {
            throw BackupProblem("the segment holds cut-out values of entries it does not hold")
        }
        return (manifest, entries)
    }

    /// The manifest, once it is shown to be this directory's, signed by a member and sealed
    /// under its data key; the data key's cipher.
    func openManifest() throws -> (LogSegmentManifest, BackupID, AES256GCM) {
        let name = (path as NSString).lastPathComponent
        let parts = name.split(separator: "-")
        guard parts.count == 3, let first = UInt64(parts[0]), let last = UInt64(parts[1]),
            let id = BackupID(String(parts[2]))
        else { throw BackupProblem("\(name) is not a log segment's name") }
        do {
            let sealed = try SealedManifest.read(path)
            let manifest = try sealed.decode(LogSegmentManifest.self)
            guard manifest.format == LogSegmentManifest.currentFormat else {
                throw BackupProblem(
                    "manifest.json is format \(manifest.format); this binary reads \(LogSegmentManifest.currentFormat)")
            }
            guard manifest.segmentID == id.description, manifest.firstIndex == first, manifest.lastIndex == last
            else { throw BackupProblem("manifest.json is another segment's: it was swapped") }
            try sealed.checkSigner(member: manifest.member, authorities: authorities)
            let cipher = try sealed.dataCipher(
                wrappedKey: manifest.wrappedKey, wrappedBy: manifest.keyProvider, kek: kek,
                context: LogSegmentWriter.wrapContext(id))
            return (manifest, id, cipher)
        } catch let problem as BackupProblem {
            throw BackupProblem("segment \(name): \(problem.description)")
        }
    }
}

/// The segments that carry a full backup forward, one after another: each starts at the entry
/// after the last one replayed, follows its term and is of the same lineage. The same range
/// may lie in several targets (and a leader that failed before moving the archive mark may have
/// left a shorter one): the longest copy that verifies is taken.
public struct SegmentChain: Sendable {
    public let targets: [String]
    public let lineage: String
    public let kek: any MasterKeyProvider
    public let authorities: [[UInt8]]

    public init(targets: [String], lineage: String, kek: any MasterKeyProvider, authorities: [[UInt8]]) {
        self.targets = targets
        self.lineage = lineage
        self.kek = kek
        self.authorities = authorities
    }

    /// Calls `body` with the entries of each segment of the chain after (`index`, `term`) until
    /// `body` answers false or no segment follows; answers the last index and term given.
    @discardableResult
    public func forEachSegment(
        after start: (index: UInt64, term: UInt64), _ body: ([Entry]) throws -> Bool
    ) throws -> (index: UInt64, term: UInt64) {
        let all = targets.flatMap(LogSegments.list)
        var (index, term) = start
        while true {
            let candidates = all.filter { $0.firstIndex == index + 1 }.sorted { $0.lastIndex > $1.lastIndex }
            var problems: [String] = []
            var found: [Entry]?
            for candidate in candidates {
                let reader = LogSegmentReader(path: candidate.path, kek: kek, authorities: authorities)
                do {
                    let (manifest, _, _) = try reader.openManifest()
                    guard manifest.lineage == lineage, manifest.previousTerm == term else { continue }
                    found = try reader.entries().entries
                    break
                } catch {
                    problems.append("\(error)")
                }
            }
            guard let entries = found else {
                if !problems.isEmpty {
                    throw BackupProblem(
                        "no copy of the segment after index \(index) holds: \(problems.joined(separator: "; "))")
                }
                return (index, term)
            }
            index = entries[entries.count - 1].index
            term = entries[entries.count - 1].term
            guard try body(entries) else { return (index, term) }
        }
    }
}
