import AuditChain
import CRM
import Foundation
import KVStore
import Logging
import Sealing
import Synchronization

/// The leader's audit checkpoints: every 1,024 entries or 60 seconds (whichever comes first,
/// and only when entries were added), a transaction in which every member checks that its own
/// chain holds the leader's hash at the head and that the entries since the last checkpoint
/// still hash right (a member that differs raises TAMPER), and which appends the statement
/// signed with the leader's member key (ECDSA P-256), its certificate attached.
final class AuditCheckpoints: Sendable {
    let crm: CRMRecords
    let member: UInt64
    let keyFile: String
    let certificateFile: String
    let caFile: String
    let everyEntries: UInt64
    let everyMillis: UInt64
    /// Raises TAMPER on this member.
    let raiseTamper: @Sendable (String) -> Void
    /// When this member last proposed one (it proposes again only after the interval).
    private let lastProposedAt = Mutex<UInt64>(0)
    /// The entry an injected fault changed last (each value of the fault acts once).
    private let tampered = Mutex<UInt64?>(nil)

    init(
        crm: CRMRecords, member: UInt64, keyFile: String, certificateFile: String, caFile: String,
        everyEntries: UInt64 = 1024, everyMillis: UInt64 = 60_000, raiseTamper: @escaping @Sendable (String) -> Void
    ) {
        self.caFile = caFile
        self.raiseTamper = raiseTamper
        self.crm = crm
        self.member = member
        self.keyFile = keyFile
        self.certificateFile = certificateFile
        self.everyEntries = everyEntries
        self.everyMillis = everyMillis
    }

    /// Proposes a checkpoint when one is due (on the leader only; a refusal waits for the next).
    func step() async {
        injectTamperFault()
        guard crm.isLeader, crm.local.gate().refusal == nil else { return }
        do {
            let head = try crm.trail.head()
            let checked = try crm.trail.checked()
            // The entry right after a checkpoint's head is that checkpoint's own: nothing new.
            guard head.seq > checked + 1 else { return }
            let now = crm.local.nowMillis()
            let due = head.seq - checked >= everyEntries || now >= lastProposedAt.withLock { $0 } &+ everyMillis
            guard due else { return }
            lastProposedAt.withLock { $0 = now }
            let transaction = try checkpoint(head)
            _ = try await crm.propose(transaction, caller: Caller(identity: .member(member)), audit: nil)
        } catch {
            crm.logger.warning("audit checkpoint not proposed; trying later", metadata: ["error": "\(error)"])
        }
    }

    /// A drill's fault: changes this member's copy of one audit entry, once.
    private func injectTamperFault() {
        guard let seq = FaultHooks.shared.tamperAuditSeq, tampered.withLock({ $0 }) != seq else { return }
        tampered.withLock { $0 = seq }
        do {
            // What the periodic verification would find later, found now: a drill need not wait.
            if try crm.engine.kv.tamperWithAuditEntry(chain: crm.trail.chain, seq: seq) { verifyChain() }
        } catch {
            crm.logger.warning("the injected audit fault failed", metadata: ["error": "\(error)"])
        }
    }

    /// Re-hashes this member's whole chain and holds every checkpoint in it to its signature,
    /// the cluster CA and the hash found here (at start, with the integrity check, and after an
    /// injected fault): a difference raises TAMPER. Checkpoints check only the entries since
    /// the last one; this finds an older entry changed in the store.
    func verifyChain() {
        var verifier = AuditVerifier(after: .empty)
        var checker = CheckpointChecker(
            chain: crm.trail.chain, caPEM: Array(FileManager.default.contents(atPath: caFile) ?? Data()))
        var next: UInt64 = 1
        do {
            while true {
                let page = try crm.trail.links(from: next, limit: 1000)
                for (seq, link, _) in page {
                    guard verifier.check(seq: seq, link), let link else {
                        let problem = verifier.problem.map { "entry \($0.seq): \($0.why)" } ?? "entry \(seq)"
                        return raiseTamper("the audit trail's verification found \(problem)")
                    }
                    if let why = checker.check(link) {
                        return raiseTamper("the audit trail's verification found entry \(seq): \(why)")
                    }
                    next = seq + 1
                }
                if page.count < 1000 { break }
            }
            crm.logger.info(
                "audit trail verified",
                metadata: ["entries": "\(verifier.checked)", "checkpoints": "\(checker.verified)"])
        } catch {
            crm.logger.warning("the audit trail could not be verified", metadata: ["error": "\(error)"])
        }
    }

    /// The checkpoint transaction over `head`, signed now with the member's key file.
    func checkpoint(_ head: AuditHead) throws -> Transaction {
        guard let key = FileManager.default.contents(atPath: keyFile),
            let certificatePEM = FileManager.default.contents(atPath: certificateFile)
        else { throw SignatureError.unreadableKey("\(keyFile) or \(certificateFile) cannot be read") }
        let certificate = try ECDSASignature.certificateDER(pem: Array(certificatePEM))
        let signed = AuditCheckpoint.signedBytes(chain: crm.trail.chain, seq: head.seq, hash: head.hash, member: member)
        let signature = try ECDSASignature.sign(signed, keyPEM: Array(key))
        return crm.trail.checkpoint(head, member: member, certificate: certificate, signature: signature)
    }
}
