import Foundation

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
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            let bytes = files.reduce(UInt64(0)) { $0 + (BackupFiles.size(directory + "/" + $1) ?? 0) }
            backups.append(Listed(id: id, target: target, manifest: manifest, bytes: bytes))
        }
        backups.sort {
            ($0.manifest?.createdAtMillis ?? 0, $0.id.description) < (
                $1.manifest?.createdAtMillis ?? 0, $1.id.description
            )
        }
        return (backups, partial.sorted())
    }

    /// Copies the complete backup `id` from one target to another the same way it was written:
    /// into a partial directory, each file synced, renamed into place last.
    public static func copy(_ id: BackupID, from source: String, to target: String) throws {
        let from = path(source, id)
        let partial = partialPath(target, id)
        try FileManager.default.createDirectory(
            atPath: partial, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            for name in try FileManager.default.contentsOfDirectory(atPath: from).sorted() {
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
