import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Files of a backup, written durably: each file synced, then its directory, so that a backup
/// renamed into place after its manifest survives a crash whole.
enum BackupFiles {
    /// Bytes a manifest or seal file may have (a manifest lists every chunk).
    static let maxManifestBytes = 16 << 20

    static func write(_ bytes: [UInt8], to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw problem("cannot create", path) }
        defer { close(descriptor) }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                Glibc.write(descriptor, buffer.baseAddress! + written, bytes.count - written)
            }
            guard result > 0 else { throw problem("cannot write", path) }
            written += result
        }
        guard fsync(descriptor) == 0 else { throw problem("cannot sync", path) }
    }

    static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw problem("cannot open", path) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw problem("cannot sync", path) }
    }

    /// A file of at most `limit` bytes (a named problem when missing or larger).
    static func read(_ path: String, limit: Int) throws -> [UInt8] {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = attributes[.size] as? Int
        else { throw BackupProblem("\((path as NSString).lastPathComponent) is missing") }
        guard size <= limit else {
            throw BackupProblem("\((path as NSString).lastPathComponent) has \(size) bytes, over \(limit)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BackupProblem("\((path as NSString).lastPathComponent) cannot be read")
        }
        return Array(data)
    }

    static func size(_ path: String) -> UInt64? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? UInt64
    }

    private static func problem(_ what: String, _ path: String) -> BackupProblem {
        BackupProblem("\(what) \(path): \(String(cString: strerror(errno)))")
    }
}
