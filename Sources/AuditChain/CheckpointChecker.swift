import Sealing

/// Checks the checkpoints of a chain as `crmctl audit verify` reads it in order: each
/// checkpoint's hash must be the hash the verifier found for that entry, its signature must hold
/// under its certificate, and the certificate must be the named member's, issued by the cluster
/// CA. Keeps the hashes of the latest entries only (checkpoints follow their entry closely).
public struct CheckpointChecker {
    let chain: [UInt8]
    let authorities: [[UInt8]]
    private var recent: [UInt64: [UInt8]] = [:]
    public private(set) var verified = 0

    /// Hashes kept for checkpoints still to come (a checkpoint older than this is not compared).
    static let keptHashes: UInt64 = 65_536

    public init(chain: [UInt8], authorities: [[UInt8]]) {
        self.chain = chain
        self.authorities = authorities
    }

    /// With the certificates of a PEM bundle (the cluster CA file) as the authorities.
    public init(chain: [UInt8], caPEM: [UInt8]) {
        self.init(chain: chain, authorities: ECDSASignature.certificatesDER(pem: caPEM))
    }

    /// Takes the next entry (already checked by `AuditVerifier`); answers why its checkpoint
    /// fails, or nil.
    public mutating func check(_ link: AuditLink) -> String? {
        recent[link.seq] = link.hash
        if link.seq > Self.keptHashes { recent[link.seq - Self.keptHashes] = nil }
        guard let checkpoint = AuditCheckpoint.in(entryBody: link.body) else { return nil }
        let signed = AuditCheckpoint.signedBytes(
            chain: chain, seq: checkpoint.seq, hash: checkpoint.hash, member: checkpoint.member)
        guard ECDSASignature.verify(checkpoint.signature, of: signed, certificateDER: checkpoint.certificate) else {
            return "the checkpoint's signature does not hold"
        }
        guard ECDSASignature.isIssued(checkpoint.certificate, byAnyOf: authorities) else {
            return "the checkpoint's certificate was not issued by the cluster CA"
        }
        guard ECDSASignature.names(uri: "crm://member/\(checkpoint.member)", in: checkpoint.certificate) else {
            return "the checkpoint's certificate is not member \(checkpoint.member)'s"
        }
        if let found = recent[checkpoint.seq], found != checkpoint.hash {
            return "the checkpoint signed another hash for entry \(checkpoint.seq)"
        }
        verified += 1
        return nil
    }
}
