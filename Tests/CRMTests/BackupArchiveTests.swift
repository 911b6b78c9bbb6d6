import AuditChain
import Backup
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Testing

@testable import CRM

/// Logical backups of a real CRM state: the archives hold every CRM and KV record in the right
/// archive (subject keys only in the key archive, sign-in sessions in neither), nothing in
/// clear, a manifest whose counts, digest and audit head a deep verify recomputes; and each way
/// a backup can be damaged is a named failure of verify: a flipped byte, a truncated chunk, a
/// swapped manifest, a chunk spliced from another backup, a wrong backup key, a foreign signer.
@Suite struct BackupArchiveTests {
    private let marker = "Backup-Marker-Qazwsx"

    /// A CRM with persons, a deal, audit entries and a sign-in session; a CA and member 1's
    /// certificate; a backup key.
    final class Fixture {
        let crm: TestCRM
        let directory = NSTemporaryDirectory() + "crm-backup-" + UUID().uuidString
        let authorities: [[UInt8]]
        let signer: BackupSigner
        let stranger: BackupSigner
        let backupKey: FileMasterKeyProvider
        let target: String

        init(persons: Int, marker: String) throws {
            crm = try TestCRM()
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            target = directory + "/target"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            let ca = try TestCertificates.make(in: directory, name: "ca", uri: nil, issuer: nil)
            let member = try TestCertificates.make(in: directory, name: "m1", uri: "crm://member/1", issuer: "ca")
            let other = try TestCertificates.make(in: directory, name: "x1", uri: "crm://member/1", issuer: nil)
            authorities = ECDSASignature.certificatesDER(pem: ca.certificate)
            signer = BackupSigner(keyPEM: member.key, certificatePEM: member.certificate)
            stranger = BackupSigner(keyPEM: other.key, certificatePEM: other.certificate)
            backupKey = try FileMasterKeyProvider.generateKeyFile(at: directory + "/backup.key")
            let trail = AuditTrail(kv: crm.state.kv)
            for number in 0..<persons {
                _ = try crm.create(.person, ["last_name": .text("\(marker) \(number)")])
                try crm.apply(
                    Transaction(operations: [
                        trail.append(
                            AuditEntry(action: "record.create", actor: "crm://user/\(number)", application: "app"))
                    ]))
            }
            _ = try crm.create(.deal, ["name": .text("Engines"), "stage": .text("new")])
            try crm.apply(
                Transaction(operations: [
                    .put(key: CRMLayout.workspaceKey(1, "/ss/") + [UInt8](repeating: 9, count: 32), value: [1])
                ]))
        }

        func backup(
            with signer: BackupSigner? = nil, key: FileMasterKeyProvider? = nil
        ) throws -> (BackupID, BackupManifest) {
            let id = try BackupID.random()
            let writer = BackupWriter(kek: key ?? backupKey, signer: signer ?? self.signer)
            let manifest = try writer.write(
                try crm.state.kv.pinState(), id: id,
                origin: .init(member: 1, binaryVersion: "test", createdAtMillis: 1), into: target)
            return (id, manifest)
        }

        func verifier(_ id: BackupID, key: FileMasterKeyProvider? = nil) -> BackupVerifier {
            BackupVerifier(directory: BackupStore.path(target, id), kek: key ?? backupKey, authorities: authorities)
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    private func failure(_ body: () throws -> Any) -> String? { failureText(body) }

    @Test func aBackupHoldsEveryRecordInItsArchiveAndADeepVerifyRecountsIt() throws {
        let fixture = try Fixture(persons: 30, marker: marker)
        let (id, manifest) = try fixture.backup()
        #expect(manifest.counts["person"] == 30 && manifest.counts["deal"] == 1, "\(manifest.counts)")
        #expect(manifest.counts["audit_entries"] == 30 && manifest.counts["subject_keys"] == 30, "one per person")
        #expect(manifest.auditHead.seq == 30 && manifest.keySetVersion == 1)
        #expect(manifest.appliedIndex == fixture.crm.state.kv.appliedIndex)
        let report = try fixture.verifier(id).verify(deep: true)
        #expect(report.auditEntries == 30 && report.records > 60)

        // Subject keys are in the key archive only; the session in neither; nothing in clear.
        let vault = BackedUpState.crm + CRMLayout.vaultPrefix(workspace: 1)
        let sessions = BackedUpState.crm + CRMLayout.workspaceKey(1, "/ss/")
        var data: [[UInt8]] = []
        try fixture.verifier(id).forEachRecord(.data) { key, _ in data.append(key) }
        var keys: [[UInt8]] = []
        try fixture.verifier(id).forEachRecord(.keys) { key, _ in keys.append(key) }
        #expect(!data.contains { $0.starts(with: vault) } && data.count > 30)
        #expect(keys.filter { $0.starts(with: vault) }.count == 30)
        #expect(!(data + keys).contains { $0.starts(with: sessions) })
        let path = BackupStore.path(fixture.target, id)
        for name in try FileManager.default.contentsOfDirectory(atPath: path) {
            let bytes = try #require(FileManager.default.contents(atPath: path + "/" + name))
            #expect(bytes.range(of: Data(marker.utf8)) == nil, "\(name) holds a personal value in clear")
        }
        #expect(BackupStore.list(fixture.target).backups.map(\.id) == [id])
    }

    @Test func eachDamageIsANamedFailureOfVerify() throws {
        let fixture = try Fixture(persons: 5, marker: marker)
        let (id, manifest) = try fixture.backup()
        let (other, otherManifest) = try fixture.backup()
        let path = BackupStore.path(fixture.target, id)
        let chunk = path + "/" + manifest.data[0].file
        let original = try #require(FileManager.default.contents(atPath: chunk))
        func restore() throws { try original.write(to: URL(fileURLWithPath: chunk)) }

        // A flipped byte.
        var flipped = original
        flipped[flipped.count / 2] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: chunk))
        #expect(
            failure { try fixture.verifier(id).verify(deep: false) }?.contains("differs from the manifest's hash")
                == true)
        // A truncated chunk.
        try original.prefix(original.count - 10).write(to: URL(fileURLWithPath: chunk))
        #expect(failure { try fixture.verifier(id).verify(deep: false) }?.contains("truncated") == true)
        // A chunk spliced from the other backup.
        let foreign = BackupStore.path(fixture.target, other) + "/" + otherManifest.data[0].file
        try FileManager.default.removeItem(atPath: chunk)
        try FileManager.default.copyItem(atPath: foreign, toPath: chunk)
        let spliced = failure { try fixture.verifier(id).verify(deep: false) } ?? ""
        #expect(spliced.contains("spliced") || spliced.contains("bytes, the manifest says"), "\(spliced)")
        try FileManager.default.removeItem(atPath: chunk)
        try restore()
        #expect(failure { try fixture.verifier(id).verify(deep: true) } == nil)

        // A swapped manifest (the other backup's, with its seal).
        for name in ["manifest.json", "manifest.seal"] {
            try FileManager.default.moveItem(atPath: path + "/" + name, toPath: path + "/" + name + ".kept")
            try FileManager.default.copyItem(
                atPath: BackupStore.path(fixture.target, other) + "/" + name, toPath: path + "/" + name)
        }
        #expect(failure { try fixture.verifier(id).verify(deep: false) }?.contains("it was swapped") == true)
        // An edited manifest (its signature and MAC no longer hold).
        for name in ["manifest.json", "manifest.seal"] {
            try FileManager.default.removeItem(atPath: path + "/" + name)
            try FileManager.default.moveItem(atPath: path + "/" + name + ".kept", toPath: path + "/" + name)
        }
        let body = try #require(FileManager.default.contents(atPath: path + "/manifest.json"))
        let edited = String(decoding: body, as: UTF8.self).replacingOccurrences(
            of: "\"person\" : 5", with: "\"person\" : 6")
        #expect(edited != String(decoding: body, as: UTF8.self))
        try Data(edited.utf8).write(to: URL(fileURLWithPath: path + "/manifest.json"))
        #expect(
            failure { try fixture.verifier(id).verify(deep: false) }?.contains("does not match its signature") == true)
        try body.write(to: URL(fileURLWithPath: path + "/manifest.json"))

        // A wrong backup key.
        let wrongKey = try FileMasterKeyProvider.generateKeyFile(at: fixture.directory + "/wrong.key")
        #expect(
            failure { try fixture.verifier(id, key: wrongKey).verify(deep: false) }?.contains(
                "does not open its data key") == true)
        // A manifest signed by a certificate the cluster CA did not issue.
        let (forged, _) = try fixture.backup(with: fixture.stranger)
        #expect(failure { try fixture.verifier(forged).verify(deep: false) }?.contains("from the cluster CA") == true)
        #expect(failure { try fixture.verifier(id).verify(deep: true) } == nil, "the backup holds again")
    }

    @Test func anInterruptedBackupIsNeverListed() throws {
        let fixture = try Fixture(persons: 2, marker: marker)
        // A writer whose signing key cannot sign fails after its chunks: nothing is listed, and
        // its partial directory is gone.
        let broken = BackupSigner(keyPEM: Array("not a key".utf8), certificatePEM: fixture.signer.certificatePEM)
        #expect(failure { try fixture.backup(with: broken) } != nil)
        let listed = BackupStore.list(fixture.target)
        #expect(listed.backups.isEmpty && listed.partial.isEmpty, "\(listed.partial)")
        // A partial directory left by a crash is reported as such, never as a backup.
        try FileManager.default.createDirectory(
            atPath: fixture.target + "/.partial-" + (try BackupID.random()).description,
            withIntermediateDirectories: true)
        let (id, _) = try fixture.backup()
        let after = BackupStore.list(fixture.target)
        #expect(after.backups.map(\.id) == [id] && after.partial.count == 1)
        // A copy to a second target verifies there too.
        let second = fixture.directory + "/second"
        try FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: true)
        try BackupStore.copy(id, from: fixture.target, to: second)
        let copy = BackupVerifier(
            directory: BackupStore.path(second, id), kek: fixture.backupKey, authorities: fixture.authorities)
        #expect(try copy.verify(deep: true).manifest.backupID == id.description)
    }

    /// A copy received piece by piece: odd names, pieces out of order and a copy without its
    /// manifest are refused, and nothing is listed until it is whole.
    @Test func aReceivedCopyIsCheckedPieceByPiece() throws {
        let fixture = try Fixture(persons: 3, marker: marker)
        let (id, _) = try fixture.backup()
        let source = BackupStore.path(fixture.target, id)
        let elsewhere = fixture.directory + "/elsewhere"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        let refused = try BackupReceiver(target: elsewhere, id: id)
        #expect(failure { try refused.add("../escape", offset: 0, [1], fileBytes: 1) } != nil)
        #expect(
            failure { try refused.add("manifest.json", offset: 5, [1], fileBytes: 9) }?.contains("out of order") == true
        )
        #expect(failure { try refused.finish() }?.contains("before its manifest") == true)
        refused.abandon()
        #expect(BackupStore.list(elsewhere).backups.isEmpty && BackupStore.list(elsewhere).partial.isEmpty)

        let receiver = try BackupReceiver(target: elsewhere, id: id)
        for name in try BackupStore.files(of: source) {
            let bytes = Array(try #require(FileManager.default.contents(atPath: source + "/" + name)))
            for start in stride(from: 0, to: max(bytes.count, 1), by: 1000) {
                let piece = Array(bytes[start..<min(bytes.count, start + 1000)])
                try receiver.add(name, offset: UInt64(start), piece, fileBytes: UInt64(bytes.count))
            }
        }
        let copy = try receiver.finish()
        let verified = try BackupVerifier(directory: copy, kek: fixture.backupKey, authorities: fixture.authorities)
            .verify(deep: true)
        #expect(verified.manifest.backupID == id.description)
    }
}

/// What `body` threw, as text (nil: it did not throw).
func failureText(_ body: () throws -> Any) -> String? {
    do {
        _ = try body()
        return nil
    } catch {
        return "\(error)"
    }
}
