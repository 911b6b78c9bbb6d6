import Foundation
import Sealing

/// Backups in a target directory: `<target>/<backup id>/` holds a complete backup (chunk files,
/// `manifest.json`, `manifest.seal`); `<target>/.partial-<id>/` one being written or abandoned,
/// never listed as a backup.
public enum BackupStore {
    static let manifestFile = "manifest.json"
    static let sealFile = "manifest.seal"
    static let partialPrefix = ".partial-"

    public static func path(_ target: String, _ id: BackupID) -> String { target + "/" + id.description }
    static func partialPath(_ target: String, _ id: BackupID) -> String {
        target + "/" + partialPrefix + id.description
    }

    /// One complete backup found in a target, by its unverified manifest (nil when that does
    /// not decode: `verify` names why).
    public struct Listed: Sendable {
        public var id: BackupID
        public var target: String
        public var manifest: BackupManifest?
        public var bytes: UInt64

        public init(id: BackupID, target: String, manifest: BackupManifest?, bytes: UInt64) {
            self.id = id
            self.target = target
            self.manifest = manifest
            self.bytes = bytes
        }
    }

    /// The complete backups in `target`, oldest first (by the time their manifest gives), and
    /// the partial ones left by interrupted writes.
    public static func list(_ target: String) -> (backups: [Listed], partial: [String]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        var backups: [Listed] = []
        var partial: [String] = []
        for name in names {
            if name.hasPrefix(partialPrefix) {
                partial.append(name)
                continue
            }
            guard let id = BackupID(name) else { continue }
            let directory = target + "/" + name
            let manifest = (try? BackupFiles.read(directory + "/" + manifestFile, limit: BackupFiles.maxManifestBytes))
                .flatMap { try? JSONDecoder().decode(BackupManifest.self, from: Data($0)) }
            backups.append(Listed(id: id, target: target, manifest: manifest, bytes: bytes(of: directory)))
        }
        backups.sort {
            ($0.manifest?.createdAtMillis ?? 0, $0.id.description) < (
                $1.manifest?.createdAtMillis ?? 0, $1.id.description
            )
        }
        return (backups, partial.sorted())
    }

    /// The bytes of the files in a backup's directory.
    public static func bytes(of directory: String) -> UInt64 {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return files.reduce(UInt64(0)) { $0 + (BackupFiles.size(directory + "/" + $1) ?? 0) }
    }

    /// Copies the complete backup `id` from one target to another the same way it was written:
    /// into a partial directory, each file synced, renamed into place last.
    public static func copy(_ id: BackupID, from source: String, to target: String) throws {
        let from = path(source, id)
        let partial = partialPath(target, id)
        try FileManager.default.createDirectory(
            atPath: partial, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            for name in try files(of: from) {
                let bytes = try BackupFiles.read(from + "/" + name, limit: Int(BackupChunks.maxRawBytes) * 2)
                try BackupFiles.write(bytes, to: partial + "/" + name)
            }
            try BackupFiles.syncDirectory(partial)
            try FileManager.default.moveItem(atPath: partial, toPath: path(target, id))
            try BackupFiles.syncDirectory(target)
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
    }
}

extension BackupStore {
    /// Whether `name` is a file a backup holds (a chunk, the manifest or its seal).
    static func isBackupFile(_ name: String) -> Bool {
        if name == manifestFile || name == sealFile { return true }
        let parts = name.split(separator: "-", maxSplits: 1)
        return parts.count == 2 && BackupArtefact(rawValue: String(parts[0])) != nil && parts[1].hasSuffix(".chunk")
            && parts[1].dropLast(6).count == 6 && parts[1].dropLast(6).allSatisfy(\.isNumber)
    }

    /// A backup's files in the order a copy is sent: chunks, then the seal, the manifest last
    /// (a copy is whole only once its manifest arrives). Refuses a directory holding anything else.
    public static func files(of directory: String) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        guard names.allSatisfy(isBackupFile), names.contains(manifestFile), names.contains(sealFile) else {
            throw BackupProblem("\((directory as NSString).lastPathComponent) is not a complete backup")
        }
        return names.filter { $0.hasSuffix(".chunk") }.sorted() + [sealFile, manifestFile]
    }
}

/// A backup copied from a member, piece by piece as `PullBackup` sends it, into a target of
/// this host: into `.partial-<id>`, each file synced, renamed into place once the manifest has
/// arrived whole. Names, sizes and offsets are checked before anything is written.
public final class BackupReceiver {
    public let target: String
    public let id: BackupID
    private var file: (name: String, bytes: UInt64, data: [UInt8])?
    private var received: Set<String> = []

    public init(target: String, id: BackupID) throws {
        self.target = target
        self.id = id
        guard !FileManager.default.fileExists(atPath: BackupStore.path(target, id)) else {
            throw BackupProblem("\(BackupStore.path(target, id)) exists already")
        }
        let partial = BackupStore.partialPath(target, id)
        try? FileManager.default.removeItem(atPath: partial)
        try FileManager.default.createDirectory(
            atPath: partial, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// One piece: `data` at `offset` of `name`, a file of `fileBytes`.
    public func add(_ name: String, offset: UInt64, _ data: [UInt8], fileBytes: UInt64) throws {
        guard BackupStore.isBackupFile(name), !received.contains(name) else {
            throw BackupProblem("the member sent a file named \(name.prefix(64)) twice or out of place")
        }
        guard fileBytes <= UInt64(BackupChunks.maxRawBytes) * 2 else {
            throw BackupProblem("\(name) would have \(fileBytes) bytes, over the bound")
        }
        if file == nil { file = (name, fileBytes, []) }
        guard let current = file, current.name == name, current.bytes == fileBytes,
            offset == UInt64(current.data.count), offset + UInt64(data.count) <= fileBytes
        else { throw BackupProblem("\(name): a piece out of order") }
        file?.data += data
        if UInt64(file!.data.count) == fileBytes {
            try BackupFiles.write(file!.data, to: BackupStore.partialPath(target, id) + "/" + name)
            received.insert(name)
            file = nil
        }
    }

    /// Renames the copy into place once the manifest and its seal are whole; answers its path.
    public func finish() throws -> String {
        guard file == nil, received.contains(BackupStore.manifestFile), received.contains(BackupStore.sealFile) else {
            throw BackupProblem("the copy ended before its manifest was whole")
        }
        let partial = BackupStore.partialPath(target, id)
        try BackupFiles.syncDirectory(partial)
        try FileManager.default.moveItem(atPath: partial, toPath: BackupStore.path(target, id))
        try BackupFiles.syncDirectory(target)
        return BackupStore.path(target, id)
    }

    /// Removes what an interrupted copy wrote.
    public func abandon() { try? FileManager.default.removeItem(atPath: BackupStore.partialPath(target, id)) }
}

extension BackupVerifier {
    /// With the backup key's file and the cluster CA bundle (PEM) as a tool on another host has them.
    public init(directory: String, keyFile: String, caPEM: [UInt8]) throws {
        self.init(
            directory: directory, kek: try FileMasterKeyProvider(path: keyFile),
            authorities: ECDSASignature.certificatesDER(pem: caPEM))
    }
}
