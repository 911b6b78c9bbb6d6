import AuditChain
import BinaryCoding
import CRMStateSupport
import Foundation
import KVStore
import Sealing
import Synchronization
import Testing

@testable import CRM

/// Audit checkpoints on real state machines: every member applies one the same way, a member
/// whose own entries differ reports it (TAMPER), and `CheckpointChecker` holds signatures to
/// the member's certificate and the cluster CA.
@Suite struct AuditCheckpointTests {
    private func entries(_ state: TestState, _ trail: AuditTrail, _ count: Int) throws {
        for number in 0..<count {
            let entry = AuditEntry(
                action: "record.update", actor: "crm://user/\(number)", application: "crm://client/app")
            guard
                case .transaction(.applied) = try state.apply(Transaction(operations: [trail.append(entry)]), at: 5000)
            else { throw RecordError.badRequest("the append did not apply") }
        }
    }

    @Test func aCheckpointFindsTheMemberWhoseEntriesDiffer() throws {
        let (honest, tampered) = (try TestState(), try TestState())
        let reports = Mutex<[UInt64: String]>([:])
        tampered.kv.onAuditDivergence { seq, why in reports.withLock { $0[seq] = why } }
        honest.kv.onAuditDivergence { seq, _ in Issue.record("the honest member reported entry \(seq)") }
        for state in [honest, tampered] { try entries(state, AuditTrail(kv: state.kv), 5) }
        let trail = AuditTrail(kv: honest.kv)
        #expect(try tampered.kv.tamperWithAuditEntry(chain: trail.chain, seq: 3))
        let head = try trail.head()
        let checkpoint = trail.checkpoint(head, member: 1, certificate: [1], signature: [2])
        #expect(checkpoint.commandKind == KVCommand.checkpointTransactionKind)
        for state in [honest, tampered] {
            guard case .transaction(.applied) = try state.apply(checkpoint, at: 6000) else {
                Issue.record("the checkpoint did not apply")
                return
            }
            // Applied the same everywhere: the same checked seq and the same new head.
            #expect(try AuditTrail(kv: state.kv).checked() == 5)
        }
        // The changed entry kept its stored hash, so the heads agree: only re-hashing finds it.
        #expect(try AuditTrail(kv: honest.kv).head() == AuditTrail(kv: tampered.kv).head())
        #expect(reports.withLock { $0 } == [5: "entry 3 does not match its hash"])
        // The entry the checkpoint appended carries the statement, found where verify looks.
        let last = try #require(try trail.links(from: 6, limit: 1).first?.link)
        #expect(AuditCheckpoint.in(entryBody: last.body)?.seq == 5)
        #expect(AuditEntry(encoded: last.body)?.action == "audit.checkpoint")
        #expect(AuditChain.crmChain == trail.chain)
    }

    @Test func checkpointsAreHeldToTheMembersCertificateAndTheCA() throws {
        let directory = NSTemporaryDirectory() + "crm-checkpoint-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCertificates.make(in: directory, name: "ca", uri: nil, issuer: nil)
        let member = try TestCertificates.make(in: directory, name: "member-1", uri: "crm://member/1", issuer: "ca")
        let stranger = try TestCertificates.make(in: directory, name: "other", uri: "crm://member/1", issuer: nil)
        let authorities = ECDSASignature.certificatesDER(pem: ca.certificate)
        #expect(authorities.count == 1)

        func body(
            _ seq: UInt64, _ hash: [UInt8], member id: UInt64, _ files: TestCertificates.Files
        ) throws -> AuditLink {
            let signed = AuditCheckpoint.signedBytes(chain: AuditChain.crmChain, seq: seq, hash: hash, member: id)
            var entry = AuditEntry(action: "audit.checkpoint", actor: "crm://member/\(id)", application: "")
            entry.checkpoint = AuditCheckpoint(
                seq: seq, hash: hash, member: id,
                certificate: try ECDSASignature.certificateDER(pem: files.certificate),
                signature: try ECDSASignature.sign(signed, keyPEM: files.key))
            return AuditLink.next(
                after: AuditHead(seq: seq, hash: hash), logIndex: 9, logTimeMillis: 9, body: entry.encoded)
        }
        let hash = [UInt8](repeating: 7, count: 32)
        var checker = CheckpointChecker(chain: AuditChain.crmChain, authorities: authorities)
        let entry = AuditLink.next(after: AuditHead(seq: 40, hash: hash), logIndex: 1, logTimeMillis: 1, body: [1])
        #expect(checker.check(entry) == nil)
        let first = checker.check(try body(41, entry.hash, member: 1, member))
        #expect(first == nil, "\(first ?? "")")
        #expect(checker.verified == 1)
        #expect(
            checker.check(try body(41, hash, member: 1, member)) == "the checkpoint signed another hash for entry 41")
        #expect(
            checker.check(try body(41, entry.hash, member: 2, member))
                == "the checkpoint's certificate is not member 2's")
        #expect(
            checker.check(try body(41, entry.hash, member: 1, stranger))
                == "the checkpoint's certificate was not issued by the cluster CA")
        // A signature over other bytes does not hold.
        var forged = try body(41, entry.hash, member: 1, member)
        var statement = try #require(AuditCheckpoint.in(entryBody: forged.body))
        statement.seq = 40
        var rewritten = try #require(AuditEntry(encoded: forged.body))
        rewritten.checkpoint = statement
        forged.body = rewritten.encoded
        #expect(checker.check(forged) == "the checkpoint's signature does not hold")
    }
}

/// P-256 keys and certificates made with the openssl tool, as `cluster/make-certs.sh` makes them.
enum TestCertificates {
    struct Files {
        var key: [UInt8]
        var certificate: [UInt8]
    }

    static func make(in directory: String, name: String, uri: String?, issuer: String?) throws -> Files {
        let key = "\(directory)/\(name).key"
        let certificate = "\(directory)/\(name).pem"
        try run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        var arguments = [
            "req", "-new", "-x509", "-key", key, "-subj", "/CN=\(name)", "-days", "2", "-out", certificate,
        ]
        if let issuer {
            arguments = [
                "req", "-new", "-x509", "-key", key, "-subj", "/CN=\(name)", "-days", "2", "-out", certificate,
                "-CA", "\(directory)/\(issuer).pem", "-CAkey", "\(directory)/\(issuer).key",
            ]
        }
        if let uri { arguments += ["-addext", "subjectAltName=URI:\(uri)"] }
        try run(arguments)
        return Files(
            key: Array(FileManager.default.contents(atPath: key) ?? Data()),
            certificate: Array(FileManager.default.contents(atPath: certificate) ?? Data()))
    }

    private static func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw RecordError.badRequest("openssl \(arguments[0]) failed") }
    }
}
