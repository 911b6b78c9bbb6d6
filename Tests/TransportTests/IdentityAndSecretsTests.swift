import Foundation
import Sealing
import Testing

@testable import Transport

/// Identity parsing, the deny list and secret files (security review F8, F15).
@Suite struct IdentityAndSecretsTests {
    @Test func identitiesHaveOneCanonicalASCIISpelling() {
        #expect(PeerIdentity(uri: "crm://member/5") == .member(5))
        for lenient in [
            "crm://member/+5", "crm://member/05", "crm://member/0", "crm://member/ 5", "crm://member/5 ",
            "crm://member/", "crm://member/١٢", "crm://member/99999999999999999999",
        ] {
            #expect(PeerIdentity(uri: lenient) == nil, "\(lenient)")
        }
        #expect(PeerIdentity(uri: "crm://client/app-1.b_c") == .client("app-1.b_c"))
        for lenient in [
            "crm://client/", "crm://client/élise", "crm://client/a b", "crm://client/a/b",
            "crm://client/" + String(repeating: "x", count: 129),
        ] {
            #expect(PeerIdentity(uri: lenient) == nil, "\(lenient)")
        }
        #expect(PeerIdentity.isValidClientName(String(repeating: "x", count: 128)))
    }

    @Test func theDenyListMatchesSerialsAndIdentitiesAndRefusesBadLines() throws {
        let directory = NSTemporaryDirectory() + "crm-deny-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/denied"
        try "# leaked laptop\nserial=3F:D9:E4\ncrm://client/app  # its owner left\n\n00ab\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        let list = try DenyList(path: path)
        #expect(list.refusal(serial: [0x3F, 0xD9, 0xE4], identity: .client("other")) != nil)
        #expect(list.refusal(serial: [0x00, 0xAB], identity: nil) != nil, "leading zeros do not matter")
        #expect(list.refusal(serial: [0x01], identity: .client("app")) == "crm://client/app is on the deny list")
        #expect(list.refusal(serial: [0x01], identity: .client("crmctl")) == nil)

        try "crm://client/crmctl\n".write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: path)
        #expect(try list.reloadIfChanged())
        #expect(list.refusal(serial: [0x01], identity: .client("app")) == nil)
        #expect(list.refusal(serial: [0x01], identity: .client("crmctl")) != nil)

        try "crm://client/crmctl\nnot a serial\n".write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(10)], ofItemAtPath: path)
        #expect(throws: DenyListError.self) { try list.reloadIfChanged() }
        #expect(list.refusal(serial: [0x01], identity: .client("crmctl")) != nil, "a bad file keeps the previous list")
        #expect(try DenyList(path: nil).refusal(serial: [1], identity: .client("app")) == nil)
    }

    /// Secret files are judged by the file they resolve to, on the descriptor that is read:
    /// a symbolic link to a 0600 file (a Kubernetes secret mount) is accepted, a 0644 file is
    /// refused, and so is a directory.
    @Test func secretFilesAreCheckedOnTheOpenedDescriptor() throws {
        let directory = NSTemporaryDirectory() + "crm-secret-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let secret = directory + "/key"
        try Data("material".utf8).write(to: URL(fileURLWithPath: secret))
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: secret)
        try FileManager.default.createSymbolicLink(atPath: directory + "/link", withDestinationPath: secret)
        #expect(try SecretFile.read(directory + "/link", maxBytes: 64) == Array("material".utf8))
        #expect(throws: SecretFile.Problem.tooLarge(path: secret, bytes: 8, limit: 4)) {
            try SecretFile.read(secret, maxBytes: 4)
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: secret)
        #expect(throws: SecretFile.Problem.tooOpen(path: directory + "/link", mode: 0o100644)) {
            try SecretFile.read(directory + "/link", maxBytes: 64)
        }
        #expect(throws: SecretFile.Problem.notARegularFile(path: directory)) {
            try SecretFile.read(directory, maxBytes: 64)
        }
    }
}
