import AuditChain
import Foundation
import Sealing

/// What a backup holds and how to check it: written last, as `manifest.json` (these bytes are
/// what the MAC and the signature cover) beside `manifest.seal`. Any change to a chunk changes
/// its hash here; any change here breaks the MAC (a key only the backup key unwraps) and the
/// member's signature (a certificate the cluster CA issued).
public struct BackupManifest: Codable, Equatable, Sendable {
    public static let currentFormat = 1

    public var format: Int
    /// 32 hexadecimal characters; also the backup's directory name.
    public var backupID: String
    /// The member that took it (its certificate signs the manifest).
    public var member: UInt64
    /// The state it holds: applied up to this log index, of this term, at this log time.
    public var appliedIndex: UInt64
    public var term: UInt64
    public var logTimeMillis: UInt64
    public var createdAtMillis: UInt64
    /// The `crm-node` version that wrote it.
    public var binaryVersion: String
    /// The CRM key set in use (0: none yet).
    public var keySetVersion: UInt64
    /// The audit trail's head and base (the last pruned entry) in the archive.
    public var auditHead: Head
    public var auditBase: Head
    /// Records per entity name, `kv_values`, `audit_entries`, `subject_keys`.
    public var counts: [String: UInt64]
    /// SHA-256 over every data-archive record in key order (key and value, length-prefixed).
    public var contentDigest: String
    public var data: [Chunk]
    public var keys: [Chunk]
    /// The backup's data key, wrapped by the backup key (`backup.key_file`) for this backup id.
    public var wrappedKey: String
    /// Which backup key wraps it.
    public var keyProvider: String
    /// The backup taken before this one on the same target, if any.
    public var previous: String?

    public struct Head: Codable, Equatable, Sendable {
        public var seq: UInt64
        public var hash: String

        init(_ head: AuditHead) {
            seq = head.seq
            hash = AuditChain.hex(head.hash)
        }
    }

    /// One file of an archive: `<artefact>-<index>.chunk`, the nonce then the sealed LZ4 block.
    public struct Chunk: Codable, Equatable, Sendable {
        public var file: String
        /// The file's size.
        public var storedBytes: UInt64
        /// The records' encoded size before compression (bound into the seal).
        public var rawBytes: UInt32
        public var records: UInt32
        /// SHA-256 of the file (hex).
        public var sha256: String
    }

    enum CodingKeys: String, CodingKey {
        case format
        case backupID = "backup_id"
        case member
        case appliedIndex = "applied_index"
        case term
        case logTimeMillis = "log_time_ms"
        case createdAtMillis = "created_at_ms"
        case binaryVersion = "binary_version"
        case keySetVersion = "key_set_version"
        case auditHead = "audit_head"
        case auditBase = "audit_base"
        case counts
        case contentDigest = "content_digest"
        case data, keys
        case wrappedKey = "wrapped_key"
        case keyProvider = "key_provider"
        case previous
    }

    public func chunks(_ artefact: BackupArtefact) -> [Chunk] {
        switch artefact {
        case .data: data
        case .keys: keys
        }
    }

    /// The bytes written to `manifest.json` (sorted keys: the same manifest, the same bytes).
    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return Array(try encoder.encode(self))
    }
}

/// `manifest.seal`: the MAC of `manifest.json` under a key derived from the backup's data key,
/// and the member's ECDSA signature of it with the member's certificate.
struct BackupSeal: Codable, Equatable {
    var mac: String
    var signature: String
    var certificate: String

    static func macKey(_ dataKey: SymmetricKey) -> SymmetricKey {
        SymmetricKey(copying: HMACSHA256.authenticate(Array("crm.backup.v1 manifest".utf8), key: dataKey))
    }

    /// Writes `body` as `manifest.json` and its seal (MAC and signature) into `directory`.
    static func write(_ body: [UInt8], dataKey: SymmetricKey, signer: BackupSigner, into directory: String) throws {
        let seal = BackupSeal(
            mac: AuditChain.hex(HMACSHA256.authenticate(body, key: macKey(dataKey))),
            signature: AuditChain.hex(try ECDSASignature.sign(body, keyPEM: signer.keyPEM)),
            certificate: AuditChain.hex(try ECDSASignature.certificateDER(pem: signer.certificatePEM)))
        try BackupFiles.write(body, to: directory + "/" + BackupStore.manifestFile)
        try BackupFiles.write(Array(try JSONEncoder().encode(seal)), to: directory + "/" + BackupStore.sealFile)
    }
}

/// A manifest as read from a backup's or segment's directory, before it is trusted: its bytes
/// and its seal, checked in two steps (the signer once the manifest names its member, then the
/// data key the manifest wraps, by the MAC).
struct SealedManifest {
    let body: [UInt8]
    let mac: [UInt8]
    let signature: [UInt8]
    let certificate: [UInt8]

    static func read(_ directory: String) throws -> SealedManifest {
        let body = try BackupFiles.read(directory + "/" + BackupStore.manifestFile, limit: BackupFiles.maxManifestBytes)
        let sealBytes = try BackupFiles.read(
            directory + "/" + BackupStore.sealFile, limit: BackupFiles.maxManifestBytes)
        guard let seal = try? JSONDecoder().decode(BackupSeal.self, from: Data(sealBytes)),
            let mac = [UInt8](hexString: seal.mac), let signature = [UInt8](hexString: seal.signature),
            let certificate = [UInt8](hexString: seal.certificate)
        else { throw BackupProblem("manifest.seal does not decode") }
        return SealedManifest(body: body, mac: mac, signature: signature, certificate: certificate)
    }

    func decode<Manifest: Decodable>(_ type: Manifest.Type) throws -> Manifest {
        guard let manifest = try? JSONDecoder().decode(type, from: Data(body)) else {
            throw BackupProblem("manifest.json does not decode")
        }
        return manifest
    }

    /// The signature holds under a certificate the cluster CA issued to `member`.
    func checkSigner(member: UInt64, authorities: [[UInt8]]) throws {
        guard ECDSASignature.verify(signature, of: body, certificateDER: certificate) else {
            throw BackupProblem("manifest.json does not match its signature")
        }
        guard ECDSASignature.isIssued(certificate, byAnyOf: authorities),
            ECDSASignature.names(uri: "crm://member/\(member)", in: certificate)
        else {
            throw BackupProblem("manifest.seal's certificate is not member \(member)'s from the cluster CA")
        }
    }

    /// The data key `wrappedKey` holds, unwrapped by `kek` for `context`, once the MAC holds
    /// under it; its cipher.
    func dataCipher(
        wrappedKey: String, wrappedBy provider: String, kek: any MasterKeyProvider, context: [UInt8]
    ) throws -> AES256GCM {
        guard let wrapped = [UInt8](hexString: wrappedKey) else {
            throw BackupProblem("manifest.json's wrapped key does not decode")
        }
        var keyBytes: [UInt8]
        do {
            keyBytes = try kek.unwrap(wrapped, context: context)
        } catch {
            throw BackupProblem(
                "the backup key \(kek.keyID) does not open its data key (wrapped by \(provider)): \(error)")
        }
        let dataKey = SymmetricKey(copying: keyBytes)
        scrub(&keyBytes)
        guard HMACSHA256.authenticate(body, key: BackupSeal.macKey(dataKey)) == mac else {
            throw BackupProblem("manifest.json does not match its MAC")
        }
        return AES256GCM(key: dataKey)
    }
}

/// The member's key and certificate (PEM), which sign each manifest it writes.
public struct BackupSigner: Sendable {
    public var keyPEM: [UInt8]
    public var certificatePEM: [UInt8]

    public init(keyPEM: [UInt8], certificatePEM: [UInt8]) {
        self.keyPEM = keyPEM
        self.certificatePEM = certificatePEM
    }
}

/// A backup's identity: 16 random bytes, shown (and named on disk) as 32 hex characters.
public struct BackupID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public static func random() throws -> BackupID { BackupID(checked: try SecureRandom.bytes(16)) }

    private init(checked bytes: [UInt8]) { self.bytes = bytes }

    /// Exactly 32 lower-case hexadecimal characters (the one spelling of a directory name).
    public init?(_ text: String) {
        guard text.utf8.count == 32, text == text.lowercased(), let bytes = [UInt8](hexString: text) else { return nil }
        self.bytes = bytes
    }

    public var description: String { AuditChain.hex(bytes) }
}
