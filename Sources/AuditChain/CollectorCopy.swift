import BinaryCoding
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A collector's copy of the audit trail on another host (`crmctl audit pull --to DIR`):
/// `chain.log` holds each entry exactly as the cluster stores it, a 4-byte big-endian length
/// before each; `collector.json` says whose copy it is, where it starts (the cluster's base when
/// the copy began after pruning) and the entry it ends at, with the bytes of `chain.log` that
/// hold them. The log is appended and synced before the state moves on, so a crash leaves at
/// worst a tail the next open cuts off; every open re-hashes the whole copy.
public struct CollectorCopy {
    public struct State: Codable, Equatable, Sendable {
        public var collector: String
        public var base_seq: UInt64
        public var base_hash: String
        public var seq: UInt64
        public var hash: String
        public var bytes: UInt64
    }

    public enum Problem: Error, CustomStringConvertible {
        case notAnAuditCopy(String)
        case otherCollector(String)
        case damaged(String)

        public var description: String {
            switch self {
            case .notAnAuditCopy(let why): "not an audit copy: \(why)"
            case .otherCollector(let name): "this directory is collector \(name)'s copy"
            case .damaged(let why): "the local copy is damaged: \(why)"
            }
        }
    }

    public let directory: URL
    public private(set) var state: State
    /// Entries in the copy (checked at open).
    public private(set) var entries = 0

    var logURL: URL { directory.appendingPathComponent("chain.log") }
    var stateURL: URL { directory.appendingPathComponent("collector.json") }

    /// The last entry the copy holds (the base when it holds none).
    public var last: AuditHead {
        AuditHead(seq: state.seq, hash: Self.bytes(hex: state.hash) ?? AuditChain.genesis)
    }

    public var base: AuditHead {
        AuditHead(seq: state.base_seq, hash: Self.bytes(hex: state.base_hash) ?? AuditChain.genesis)
    }

    /// Opens (or makes, mode 0700) the copy in `directory` for `collector`, cuts a torn tail
    /// off the log and re-hashes every entry from the base.
    public static func open(_ directory: URL, collector: String) throws -> CollectorCopy {
        let files = FileManager.default
        try files.createDirectory(
            at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var copy = CollectorCopy(
            directory: directory,
            state: State(
                collector: collector, base_seq: 0, base_hash: AuditChain.hex(AuditChain.genesis), seq: 0,
                hash: AuditChain.hex(AuditChain.genesis), bytes: 0))
        if let data = files.contents(atPath: copy.stateURL.path) {
            guard let state = try? JSONDecoder().decode(State.self, from: data) else {
                throw Problem.notAnAuditCopy("\(copy.stateURL.path) does not decode")
            }
            guard state.collector == collector else { throw Problem.otherCollector(state.collector) }
            copy.state = state
        }
        if !files.fileExists(atPath: copy.logURL.path) {
            guard copy.state.bytes == 0 else { throw Problem.damaged("chain.log is missing") }
            files.createFile(atPath: copy.logURL.path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        try copy.cutTail()
        try copy.recheck()
        return copy
    }

    /// Starts an empty copy after `base` (the cluster pruned what came before).
    public mutating func start(after base: AuditHead) throws {
        precondition(entries == 0 && state.seq == state.base_seq, "only an empty copy starts over")
        state.base_seq = base.seq
        state.base_hash = AuditChain.hex(base.hash)
        state.seq = base.seq
        state.hash = AuditChain.hex(base.hash)
        try saveState()
    }

    /// Appends entries the caller verified (each as stored, following `last`), syncs the log,
    /// then moves the state on.
    public mutating func append(_ stored: [(seq: UInt64, bytes: [UInt8], head: AuditHead)]) throws {
        guard let final = stored.last else { return }
        assert(stored.first!.seq == state.seq + 1 && final.head.seq == final.seq, "entries follow the copy")
        var writer = BinaryWriter()
        for entry in stored {
            precondition(entry.bytes.count <= Int(UInt32.max), "an entry's length fits its prefix")
            writer.u32(UInt32(entry.bytes.count))
            writer.raw(entry.bytes)
        }
        let handle = try FileHandle(forWritingTo: logURL)
        defer { try? handle.close() }
        try handle.seek(toOffset: state.bytes)
        try handle.write(contentsOf: Data(writer.bytes))
        try handle.synchronize()
        state.bytes += UInt64(writer.bytes.count)
        state.seq = final.head.seq
        state.hash = AuditChain.hex(final.head.hash)
        entries += stored.count
        try saveState()
    }

    private func saveState() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let temporary = directory.appendingPathComponent("collector.json.new")
        try encoder.encode(state).write(to: temporary)
        let handle = try FileHandle(forUpdating: temporary)
        try handle.synchronize()
        try handle.close()
        guard rename(temporary.path, stateURL.path) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: stateURL.path])
        }
        // The rename itself is durable once the directory is synced.
        let directoryDescriptor = Glibc.open(directory.path, O_RDONLY | O_DIRECTORY)
        guard directoryDescriptor >= 0 else { return }
        _ = fsync(directoryDescriptor)
        close(directoryDescriptor)
    }

    /// Cuts what a crash left after the bytes the state vouches for.
    private func cutTail() throws {
        let size = (try FileManager.default.attributesOfItem(atPath: logURL.path)[.size] as? NSNumber)?.uint64Value ?? 0
        guard size >= state.bytes else { throw Problem.damaged("chain.log is shorter than collector.json says") }
        guard size > state.bytes else { return }
        let handle = try FileHandle(forWritingTo: logURL)
        defer { try? handle.close() }
        try handle.truncate(atOffset: state.bytes)
        try handle.synchronize()
    }

    /// Re-hashes the copy from its base, an entry at a time: every entry follows the one
    /// before, and the last is the state's.
    private mutating func recheck() throws {
        let handle = try FileHandle(forReadingFrom: logURL)
        defer { try? handle.close() }
        var verifier = AuditVerifier(after: base)
        var count = 0
        var offset: UInt64 = 0
        while offset < state.bytes {
            let next = verifier.last.seq + 1
            guard let prefix = try handle.read(upToCount: 4), prefix.count == 4 else {
                throw Problem.damaged("entry \(next) is cut short")
            }
            let length = prefix.reduce(0) { $0 << 8 | Int($1) }
            guard length <= Self.maxStoredBytes, let bytes = try handle.read(upToCount: length), bytes.count == length
            else {
                throw Problem.damaged("entry \(next) is cut short or too long")
            }
            let link = AuditLink(encoded: Array(bytes))
            guard verifier.check(seq: link?.seq ?? next, link) else {
                throw Problem.damaged(verifier.problem.map { "entry \($0.seq): \($0.why)" } ?? "an entry does not hold")
            }
            offset += 4 + UInt64(length)
            count += 1
        }
        guard offset == state.bytes, verifier.last == last else {
            throw Problem.damaged("it ends at entry \(verifier.last.seq), collector.json says \(state.seq)")
        }
        entries = count
    }

    /// An entry as stored: its body and the link's fields around it.
    static let maxStoredBytes = AuditChain.maxBodyBytes + 1024

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return nil }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        return bytes
    }
}
