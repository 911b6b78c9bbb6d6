import Foundation
import Testing

@testable import Sealing

@Suite struct MasterKeyTests {
    @Test func generatedKeyFileIsOwnerOnlyAndLoads() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("master.key")
        let generated = try FileMasterKeyProvider.generateKeyFile(at: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let loaded = try FileMasterKeyProvider(path: path)
        #expect(loaded.keyID == generated.keyID)
        #expect(loaded.keyID.hasPrefix("file:"))
        #expect(throws: MasterKeyError.alreadyExists(path: path)) {
            try FileMasterKeyProvider.generateKeyFile(at: path)
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660, 0o606])
    func keyFileReadableByOthersIsRefused(mode: Int) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("master.key")
        try FileMasterKeyProvider.generateKeyFile(at: path)
        chmod(path, mode_t(mode))
        #expect(throws: MasterKeyError.permissionsTooOpen(path: path, mode: UInt32(0o100000 | mode))) {
            try FileMasterKeyProvider(path: path)
        }
        let message = MasterKeyError.permissionsTooOpen(path: path, mode: UInt32(mode)).description
        #expect(message.contains("chmod 600 \(path)"))
    }

    @Test func malformedOrMissingKeyFilesAreRefused() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("bad.key")
        for content in ["", "abcd\n", String(repeating: "z", count: 64) + "\n", String(repeating: "a", count: 66)] {
            _ = FileManager.default.createFile(
                atPath: path, contents: Data(content.utf8), attributes: [.posixPermissions: 0o600])
            #expect(throws: MasterKeyError.malformedKeyFile(path: path)) { try FileMasterKeyProvider(path: path) }
        }
        #expect(throws: MasterKeyError.self) { try FileMasterKeyProvider(path: directory.file("absent.key")) }
        #expect(throws: MasterKeyError.notARegularFile(path: directory.path)) {
            try FileMasterKeyProvider(path: directory.path)
        }
    }

    @Test func wrapRoundTripsAndIsBoundToKeyAndContext() throws {
        let directory = TemporaryDirectory()
        let first = try FileMasterKeyProvider.generateKeyFile(at: directory.file("a.key"))
        let second = try FileMasterKeyProvider.generateKeyFile(at: directory.file("b.key"))
        let secret = randomBytes(32)
        let context = Array("crm.test.context".utf8)
        let wrapped = try secret.withUnsafeBytes { try first.wrap($0, context: context) }
        #expect(try first.unwrap(wrapped, context: context) == secret)
        #expect(throws: MasterKeyError.wrongMasterKey(expected: first.keyID, actual: second.keyID)) {
            try second.unwrap(wrapped, context: context)
        }
        #expect(throws: MasterKeyError.self) { try first.unwrap(wrapped, context: Array("other".utf8)) }
        var altered = wrapped
        altered[altered.count - 3] ^= 1
        #expect(throws: MasterKeyError.self) { try first.unwrap(altered, context: context) }
    }
}
