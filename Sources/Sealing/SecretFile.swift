#if canImport(Glibc)
import Glibc
#endif

/// Reads a file that holds a secret (a private key, the master key), checking the file it
/// actually opened: the checks run on the open descriptor (`fstat`), so nothing can swap the
/// file between check and read, and a symbolic link (a Kubernetes secret mount, say) is judged
/// by the file it points to. The file must be a regular file owned by this user or root, with no
/// group or other permission bits, and at most `maxBytes` long.
public enum SecretFile {
    public enum Problem: Error, Equatable, CustomStringConvertible {
        case unreadable(path: String, reason: String)
        case notARegularFile(path: String)
        case tooOpen(path: String, mode: UInt32)
        case foreignOwner(path: String, owner: UInt32)
        case tooLarge(path: String, bytes: Int, limit: Int)

        public var description: String {
            switch self {
            case .unreadable(let path, let reason): return "cannot read \(path): \(reason)"
            case .notARegularFile(let path): return "\(path) is not a regular file"
            case .tooOpen(let path, let mode):
                return
                    "\(path) is readable or writable by group or others (mode \(String(mode & 0o777, radix: 8))); run `chmod 600 \(path)`"
            case .foreignOwner(let path, let owner):
                return
                    "\(path) belongs to user \(owner), not to this process's user or root; `chown` it to the node's user"
            case .tooLarge(let path, let bytes, let limit):
                return "\(path) has \(bytes) bytes, more than a secret file may (\(limit))"
            }
        }
    }

    /// The file's bytes; the caller scrubs them.
    public static func read(_ path: String, maxBytes: Int) throws(Problem) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .notARegularFile(path: path) }
        let mode = UInt32(info.st_mode)
        guard mode & 0o077 == 0 else { throw .tooOpen(path: path, mode: mode) }
        guard info.st_uid == geteuid() || info.st_uid == 0 else {
            throw .foreignOwner(path: path, owner: UInt32(info.st_uid))
        }
        guard Int(info.st_size) <= maxBytes else {
            throw .tooLarge(path: path, bytes: Int(info.st_size), limit: maxBytes)
        }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress! + filled, buffer.count - filled)
            }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                scrub(&bytes)
                throw .unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if count == 0 { break }
            filled += count
        }
        guard filled <= maxBytes else {
            scrub(&bytes)
            throw .tooLarge(path: path, bytes: filled, limit: maxBytes)
        }
        let content = Array(bytes[..<filled])
        scrub(&bytes)
        return content
    }
}
