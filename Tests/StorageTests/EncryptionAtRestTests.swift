import Foundation
import Sealing
import Testing

@testable import Storage

@Suite struct EncryptionAtRestTests {
    static let marker = bytes("MARKER-7f3a-PLAINTEXT-CANARY")

    /// Values as a CRM would write them: compressible text with the marker, and the marker alone.
    func markedValues() -> [[UInt8]] {
        [
            Self.marker,
            Array(String(repeating: "Grace Hopper <grace@example.com> ", count: 40).utf8) + Self.marker,
            Self.marker + randomBytes(2000) + Self.marker,
        ]
    }

    func filesContainingMarker(_ store: TestStore) throws -> [String] {
        try store.dataFiles().filter { path in
            let contents = [UInt8](FileManager.default.contents(atPath: path) ?? Data())
            return contents.contains(subsequence: Self.marker)
        }
    }

    @Test func markerWrittenInValuesIsAbsentFromEveryFileWALIncluded() throws {
        let store = try TestStore()
        let engine = try store.open()
        for family in ColumnFamily.dataFamilies {
            for (index, value) in markedValues().enumerated() {
                try engine.put(family, key(index), value, durability: .synced)
            }
        }
        let walFiles = try store.dataFiles().filter { $0.hasSuffix(".log") }
        #expect(!walFiles.isEmpty)
        #expect(try filesContainingMarker(store) == [], "marker found while only in the WAL")

        try engine.flush()
        #expect(try store.dataFiles().contains { $0.hasSuffix(".sst") })
        #expect(try filesContainingMarker(store) == [], "marker found after flush to SST")

        try engine.rotateDataKey()
        try engine.runReseal()
        engine.close()
        #expect(try filesContainingMarker(store) == [], "marker found after re-seal and close")
        #expect(try store.open().get(.stateMachine, key(1)) == markedValues()[1])
    }

    /// Control: the same scan does find the marker when it is written without sealing, so the
    /// test above cannot pass by failing to look.
    @Test func fileScanFindsMarkerWrittenWithoutSealing() throws {
        let store = try TestStore()
        let engine = try store.open()
        try engine.writeRaw(.stateMachine, key(1), markedValues()[1])
        #expect(try filesContainingMarker(store).contains { $0.hasSuffix(".log") })
        try engine.flush()
        #expect(try filesContainingMarker(store).contains { $0.hasSuffix(".sst") })
    }

    /// Keys are stored in clear, as kv.proto and the README say (security review F10): a key
    /// is found in the files, its value is not. Personal data belongs in values only.
    @Test func keysAreStoredInClearAsDocumented() throws {
        let store = try TestStore()
        let engine = try store.open()
        let keyMarker = bytes("k/secret-marker-KEY")
        try engine.put(.stateMachine, keyMarker, Self.marker, durability: .synced)
        try engine.flush()
        let files = try store.dataFiles().filter { path in
            [UInt8](FileManager.default.contents(atPath: path) ?? Data()).contains(subsequence: keyMarker)
        }
        #expect(files.contains { $0.hasSuffix(".sst") }, "the key is in clear in the table files")
        #expect(try filesContainingMarker(store) == [], "its value is not")
    }

    @Test func keyFileWithLoosePermissionsIsRefused() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("master.key")
        try FileMasterKeyProvider.generateKeyFile(at: path)
        chmod(path, 0o644)
        #expect {
            try StorageEngine.open(
                path: directory.file("db"), masterKey: try FileMasterKeyProvider(path: path), options: .compact)
        } throws: { error in
            guard case MasterKeyError.permissionsTooOpen = error else { return false }
            return "\(error)".contains("chmod 600")
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("db")))
        chmod(path, 0o600)
        let engine = try StorageEngine.open(
            path: directory.file("db"), masterKey: try FileMasterKeyProvider(path: path), options: .compact)
        #expect(engine.keyStatus().activeKeyID == 1)
    }
}
