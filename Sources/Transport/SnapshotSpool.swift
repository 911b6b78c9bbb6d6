import BinaryCoding
import Foundation
import Raft
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Snapshots received from leaders, kept on disk in one directory (inside the data directory)
/// until the member has installed them: a received snapshot never sits in memory whole.
///
///     receiving-<index>-<term>   while its chunks arrive (removed when the stream breaks)
///     snapshot-<index>-<term>    complete and checked: the data, then dataBytes:u64 crc32c:u32
///
/// The member installs a snapshot right after it arrives and then discards it; one it did not
/// install (the core found it stale) goes at the next install or restart. At most
/// `maxCompleteSnapshots` are kept: beginning another removes the oldest beyond that.
public final class SnapshotSpool: Sendable {
    public let directory: String
    static let maxCompleteSnapshots = 3
    static let trailerBytes = 12

    /// Opens (creating, mode 0700) the directory and removes snapshots a crash left unfinished.
    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for name in try names() where Self.parse(name, prefix: "receiving-") != nil {
            unlink(path(name))
        }
    }

    /// A received, complete snapshot at (`index`, `term`), if it is here.
    public func received(index: UInt64, term: UInt64) throws -> SpooledSnapshot? {
        let file = path(Self.completeName(index: index, term: term))
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        return try SpooledSnapshot(openingPath: file, spool: self, index: index, term: term)
    }

    /// Removes complete snapshots at or below `index` (installed or superseded).
    public func discard(through index: UInt64) {
        for name in (try? names()) ?? [] {
            if let (found, _) = Self.parse(name, prefix: "snapshot-"), found <= index { unlink(path(name)) }
        }
    }

    /// Starts receiving the snapshot at (`index`, `term`).
    func begin(index: UInt64, term: UInt64) throws -> SpoolWriter {
        let complete = (try names()).compactMap { name in Self.parse(name, prefix: "snapshot-").map { ($0.0, name) } }
        for (_, name) in complete.sorted(by: { $0.0 < $1.0 }).dropLast(Self.maxCompleteSnapshots - 1) {
            unlink(path(name))
        }
        return try SpoolWriter(
            spool: self, partial: path("receiving-\(index)-\(term)"),
            complete: path(Self.completeName(index: index, term: term)), index: index, term: term)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    private func names() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: directory) }

    static func completeName(index: UInt64, term: UInt64) -> String { "snapshot-\(index)-\(term)" }

    static func parse(_ name: String, prefix: String) -> (UInt64, UInt64)? {
        guard name.hasPrefix(prefix) else { return nil }
        let parts = name.dropFirst(prefix.count).split(separator: "-")
        guard parts.count == 2, let index = UInt64(parts[0]), let term = UInt64(parts[1]) else { return nil }
        return (index, term)
    }

    /// Syncs the directory, so that a rename or a new file in it survives a crash.
    func syncDirectory() throws {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SpoolError.io("open \(directory)", errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw SpoolError.io("fsync \(directory)", errno) }
    }
}

public enum SpoolError: Error, CustomStringConvertible {
    case io(String, Int32)
    case damaged(String)

    public var description: String {
        switch self {
        case .io(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .damaged(let why): return why
        }
    }
}

/// Writes one arriving snapshot to its `receiving-` file; `finish` makes it complete.
/// Used on one connection's event loop.
final class SpoolWriter {
    private let spool: SnapshotSpool
    private let partial: String
    private let complete: String
    private let index: UInt64
    private let term: UInt64
    private var descriptor: Int32
    private(set) var bytesWritten: UInt64 = 0

    fileprivate init(spool: SnapshotSpool, partial: String, complete: String, index: UInt64, term: UInt64) throws {
        self.spool = spool
        self.partial = partial
        self.complete = complete
        self.index = index
        self.term = term
        descriptor = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SpoolError.io("create \(partial)", errno) }
    }

    func append(_ bytes: [UInt8]) throws {
        precondition(descriptor >= 0, "append after finish or abandon")
        try Self.writeAll(bytes, to: descriptor, path: partial)
        bytesWritten += UInt64(bytes.count)
    }

    /// Adds the trailer (size and checksum the stream was checked against), closes the file
    /// and gives it its complete name. Durability comes later, from `makeDurable`, off the
    /// event loop and before the log records the snapshot.
    func finish(checksum: UInt32) throws -> SpooledSnapshot {
        var trailer = BinaryWriter(capacity: SnapshotSpool.trailerBytes)
        trailer.u64(bytesWritten)
        trailer.u32(checksum)
        try Self.writeAll(trailer.bytes, to: descriptor, path: partial)
        close(descriptor)
        descriptor = -1
        guard rename(partial, complete) == 0 else { throw SpoolError.io("rename \(partial)", errno) }
        return SpooledSnapshot(
            path: complete, directory: spool, index: index, term: term, dataBytes: bytesWritten, checksum: checksum)
    }

    /// Closes and removes the unfinished file.
    func abandon() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
        unlink(partial)
    }

    deinit { abandon() }

    static func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw SpoolError.io("write \(path)", errno) }
            written += count
        }
    }
}

/// A complete received snapshot: read back in pieces, its checksum checked again at the end
/// (the restore writes its last batch only after the reader has said the data is whole).
public final class SpooledSnapshot: SnapshotSource {
    public let path: String
    public let index: UInt64
    public let term: UInt64
    public let dataBytes: UInt64
    let checksum: UInt32
    private let spool: SnapshotSpool

    init(path: String, directory: SnapshotSpool, index: UInt64, term: UInt64, dataBytes: UInt64, checksum: UInt32) {
        self.path = path
        spool = directory
        self.index = index
        self.term = term
        self.dataBytes = dataBytes
        self.checksum = checksum
    }

    /// Reads the trailer of a file a previous run completed.
    fileprivate convenience init(openingPath path: String, spool: SnapshotSpool, index: UInt64, term: UInt64) throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SpoolError.io("open \(path)", errno) }
        defer { close(descriptor) }
        let size = lseek(descriptor, 0, SEEK_END)
        guard size >= SnapshotSpool.trailerBytes else { throw SpoolError.damaged("\(path) is too short") }
        var trailer = [UInt8](repeating: 0, count: SnapshotSpool.trailerBytes)
        let count = trailer.withUnsafeMutableBytes {
            pread(descriptor, $0.baseAddress!, $0.count, size - off_t(SnapshotSpool.trailerBytes))
        }
        var reader = BinaryReader(trailer)
        guard count == SnapshotSpool.trailerBytes, let bytes = reader.u64(), let checksum = reader.u32(),
            bytes == UInt64(size) - UInt64(SnapshotSpool.trailerBytes)
        else { throw SpoolError.damaged("\(path) has no valid trailer") }
        self.init(path: path, directory: spool, index: index, term: term, dataBytes: bytes, checksum: checksum)
    }

    public func openReader() throws -> any SnapshotReader {
        try SpooledSnapshotReader(path: path, dataBytes: dataBytes, checksum: checksum)
    }

    public func makeDurable() throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SpoolError.io("open \(path)", errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw SpoolError.io("fsync \(path)", errno) }
        try spool.syncDirectory()
    }
}

final class SpooledSnapshotReader: SnapshotReader {
    private let path: String
    private let descriptor: Int32
    private let dataBytes: UInt64
    private let expectedChecksum: UInt32
    private var offset: UInt64 = 0
    private var checksum: UInt32 = 0

    init(path: String, dataBytes: UInt64, checksum: UInt32) throws {
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SpoolError.io("open \(path)", errno) }
        self.path = path
        self.dataBytes = dataBytes
        expectedChecksum = checksum
    }

    func read(maxBytes: Int) throws -> [UInt8]? {
        precondition(maxBytes > 0)
        guard offset < dataBytes else {
            guard checksum == expectedChecksum else {
                throw SpoolError.damaged("\(path) does not match its checksum: the file was damaged after it arrived")
            }
            return nil
        }
        let wanted = Int(min(UInt64(maxBytes), dataBytes - offset))
        var piece = [UInt8](repeating: 0, count: wanted)
        var filled = 0
        while filled < wanted {
            let count = piece.withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress! + filled, wanted - filled, off_t(offset) + off_t(filled))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw count == 0 ? SpoolError.damaged("\(path) ends early") : SpoolError.io("read \(path)", errno)
            }
            filled += count
        }
        offset += UInt64(wanted)
        checksum = CRC32C.checksum(piece, continuing: checksum)
        return piece
    }

    deinit { close(descriptor) }
}
