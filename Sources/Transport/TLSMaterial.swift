import Foundation
import NIOSSL
import Sealing
import Synchronization

/// Where a member's TLS files are.
public struct TLSFiles: Sendable, Equatable {
    /// The cluster CA bundle (PEM): peers and clients must present a certificate it signed.
    public var caBundle: String
    /// This member's certificate chain (PEM), naming `crm://member/<id>`.
    public var certificate: String
    /// Its private key (PEM), readable by the owner only.
    public var privateKey: String

    public init(caBundle: String, certificate: String, privateKey: String) {
        self.caBundle = caBundle
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

/// Why TLS files could not be used, with what to do about it.
public enum TLSMaterialError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case noIdentity(path: String)
    case keyTooOpen(path: String, mode: Int)
    case wrongIdentity(path: String, names: PeerIdentity, required: PeerIdentity)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            return
                "cannot load \(path): \(reason). Check the path in the config; cluster/make-certs.sh creates the files"
        case .noIdentity(let path):
            return
                "\(path) names no crm identity (a URI crm://member/<id> or crm://client/<name> in its subject alternative names); "
                + "make it with cluster/make-certs.sh"
        case .wrongIdentity(let path, let names, let required):
            return "\(path) names \(names), but this process is \(required); use that identity's certificate"
        case .keyTooOpen(let path, let mode):
            return "private key \(path) is readable by others (mode \(String(mode, radix: 8))); run `chmod 600 \(path)`"
        }
    }
}

/// The loaded CA bundle, certificate chain and key, and the identity the certificate names.
public struct TLSMaterial: Sendable {
    public let files: TLSFiles
    public let trustRoots: [NIOSSLCertificate]
    public let certificateChain: [NIOSSLCertificate]
    public let privateKey: NIOSSLPrivateKey
    public let identity: PeerIdentity

    public init(files: TLSFiles) throws(TLSMaterialError) {
        self.files = files
        trustRoots = try Self.certificates(at: files.caBundle)
        certificateChain = try Self.certificates(at: files.certificate)
        // Checked on the descriptor it is read from, following links (see `SecretFile`).
        var pem: [UInt8]
        do {
            pem = try SecretFile.read(files.privateKey, maxBytes: 64 << 10)
        } catch {
            if case .tooOpen(_, let mode) = error { throw .keyTooOpen(path: files.privateKey, mode: Int(mode & 0o777)) }
            throw .unreadable(path: files.privateKey, reason: error.description)
        }
        defer { scrub(&pem) }
        do {
            privateKey = try NIOSSLPrivateKey(bytes: pem, format: .pem)
        } catch {
            throw .unreadable(path: files.privateKey, reason: "\(error)")
        }
        guard let identity = PeerIdentity(certificate: certificateChain[0]) else {
            throw .noIdentity(path: files.certificate)
        }
        self.identity = identity
    }

    private static func certificates(at path: String) throws(TLSMaterialError) -> [NIOSSLCertificate] {
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else {
                throw TLSMaterialError.unreadable(path: path, reason: "no PEM certificate in it")
            }
            return certificates
        } catch let error as TLSMaterialError {
            throw error
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
    }

    /// When this member's (or client's) certificate expires.
    public var certificateExpiresAt: Date {
        Date(timeIntervalSince1970: TimeInterval(certificateChain[0].notValidAfter))
    }

    /// When the first CA certificate of the bundle expires (after that, nothing it signed is trusted).
    public var earliestTrustRootExpiresAt: Date {
        Date(timeIntervalSince1970: TimeInterval(trustRoots.map(\.notValidAfter).min()!))
    }

    /// Server side of mutual TLS: TLS 1.2 or later, a client certificate signed by the CA required.
    public func serverConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificateChain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates(trustRoots)
        configuration.certificateVerification = .noHostnameVerification
        return configuration
    }

    /// Client side: presents this member's certificate; the server's must be signed by the CA
    /// (its identity is checked by the caller against the member it dialled).
    public func clientConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates(trustRoots)
        configuration.certificateChain = certificateChain.map { .certificate($0) }
        configuration.privateKey = .privateKey(privateKey)
        configuration.certificateVerification = .noHostnameVerification
        return configuration
    }
}

/// TLS contexts that follow their files: `reloadIfChanged()` re-reads them when a file's
/// modification time changes, and new connections use the new contexts (existing ones keep
/// theirs). A reload that fails keeps the old contexts and reports why.
public final class ReloadingTLSContexts: Sendable {
    private struct Current {
        var material: TLSMaterial
        var server: NIOSSLContext
        var client: NIOSSLContext
        var stamps: [Date?]
    }

    private let state: Mutex<Current>
    /// The identity the certificate must name, now and after every reload (a member's own).
    public let requiredIdentity: PeerIdentity?

    public init(files: TLSFiles, requiredIdentity: PeerIdentity? = nil) throws {
        self.requiredIdentity = requiredIdentity
        let material = try TLSMaterial(files: files)
        if let requiredIdentity, material.identity != requiredIdentity {
            throw TLSMaterialError.wrongIdentity(
                path: files.certificate, names: material.identity, required: requiredIdentity)
        }
        state = Mutex(
            Current(
                material: material, server: try NIOSSLContext(configuration: material.serverConfiguration()),
                client: try NIOSSLContext(configuration: material.clientConfiguration()),
                stamps: Self.stamps(files)))
    }

    public var server: NIOSSLContext { state.withLock { $0.server } }
    public var client: NIOSSLContext { state.withLock { $0.client } }
    public var material: TLSMaterial { state.withLock { $0.material } }

    /// Reloads if any file changed; returns true if it did.
    @discardableResult
    public func reloadIfChanged() throws -> Bool {
        let files = state.withLock { $0.material.files }
        let stamps = Self.stamps(files)
        guard stamps != state.withLock({ $0.stamps }) else { return false }
        let material = try TLSMaterial(files: files)
        if let requiredIdentity, material.identity != requiredIdentity {
            throw TLSMaterialError.wrongIdentity(
                path: files.certificate, names: material.identity, required: requiredIdentity)
        }
        let server = try NIOSSLContext(configuration: material.serverConfiguration())
        let client = try NIOSSLContext(configuration: material.clientConfiguration())
        state.withLock { $0 = Current(material: material, server: server, client: client, stamps: stamps) }
        return true
    }

    private static func stamps(_ files: TLSFiles) -> [Date?] {
        [files.caBundle, files.certificate, files.privateKey].map {
            (try? FileManager.default.attributesOfItem(atPath: $0))?[.modificationDate] as? Date
        }
    }
}
