import CLibCrypto

public enum SignatureError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadableKey(String)
    case unreadableCertificate(String)
    case signingFailed

    public var description: String {
        switch self {
        case .unreadableKey(let why): return "the signing key cannot be read: \(why)"
        case .unreadableCertificate(let why): return "the certificate cannot be read: \(why)"
        case .signingFailed: return "signing failed inside OpenSSL"
        }
    }
}

/// ECDSA (a member's P-256 key) with SHA-256 through OpenSSL's libcrypto: signs audit
/// checkpoints, and checks them against the signer's certificate and the cluster CA.
public enum ECDSASignature {
    /// A DER signature of SHA-256(`message`) under the PEM private key in `keyPEM`.
    public static func sign(_ message: [UInt8], keyPEM: [UInt8]) throws -> [UInt8] {
        guard let key = withBIO(keyPEM, { PEM_read_bio_PrivateKey($0, nil, nil, nil) }) else {
            throw SignatureError.unreadableKey("not a PEM private key")
        }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { throw SignatureError.signingFailed }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestSignInit(context, nil, EVP_sha256(), nil, key) == 1 else { throw SignatureError.signingFailed }
        var length = 0
        let sized = message.withUnsafeBytes { bytes in
            withNonNullBase(bytes) { base, count in EVP_DigestSign(context, nil, &length, base, count) }
        }
        guard sized == 1, length > 0, length <= 512 else { throw SignatureError.signingFailed }
        var signature = [UInt8](repeating: 0, count: length)
        let signed = message.withUnsafeBytes { bytes in
            withNonNullBase(bytes) { base, count in
                signature.withUnsafeMutableBufferPointer { out in
                    EVP_DigestSign(context, out.baseAddress, &length, base, count)
                }
            }
        }
        guard signed == 1 else { throw SignatureError.signingFailed }
        return Array(signature.prefix(length))
    }

    /// The DER form of the first certificate in `pem`.
    public static func certificateDER(pem: [UInt8]) throws -> [UInt8] {
        guard let certificate = withBIO(pem, { PEM_read_bio_X509($0, nil, nil, nil) }) else {
            throw SignatureError.unreadableCertificate("not a PEM certificate")
        }
        defer { X509_free(certificate) }
        return der(certificate)
    }

    /// Every certificate in a PEM bundle (the cluster CA file may hold several during a rotation).
    public static func certificatesDER(pem: [UInt8]) -> [[UInt8]] {
        var found: [[UInt8]] = []
        pem.withUnsafeBytes { bytes in
            guard let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count)) else { return }
            defer { BIO_free(bio) }
            while found.count < 64, let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                found.append(der(certificate))
                X509_free(certificate)
            }
        }
        ERR_clear_error()
        return found
    }

    /// Whether `signature` is a valid ECDSA/SHA-256 signature of `message` by the key of the
    /// certificate `certificateDER`.
    public static func verify(_ signature: [UInt8], of message: [UInt8], certificateDER: [UInt8]) -> Bool {
        guard let certificate = parse(certificateDER) else { return false }
        defer { X509_free(certificate) }
        guard let key = X509_get_pubkey(certificate) else { return false }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, EVP_sha256(), nil, key) == 1 else { return false }
        let result = signature.withUnsafeBytes { signatureBytes in
            message.withUnsafeBytes { messageBytes in
                withNonNullBase(signatureBytes) { signatureBase, signatureCount in
                    withNonNullBase(messageBytes) { base, count in
                        EVP_DigestVerify(context, signatureBase, signatureCount, base, count)
                    }
                }
            }
        }
        ERR_clear_error()
        return result == 1
    }

    /// Whether the certificate was signed by one of `authorities` (DER; the cluster CA is one
    /// level, so the issuer's signature is the whole chain).
    public static func isIssued(_ certificateDER: [UInt8], byAnyOf authorities: [[UInt8]]) -> Bool {
        guard let certificate = parse(certificateDER) else { return false }
        defer { X509_free(certificate) }
        for authority in authorities {
            guard let issuer = parse(authority) else { continue }
            defer { X509_free(issuer) }
            guard let key = X509_get_pubkey(issuer) else { continue }
            defer { EVP_PKEY_free(key) }
            if X509_verify(certificate, key) == 1 { return true }
        }
        ERR_clear_error()
        return false
    }

    /// Whether the certificate names `uri` as a subject alternative name. DER keeps a URI as the
    /// context tag [6] (uniformResourceIdentifier), its length and its bytes; the issuer's
    /// signature (`isIssued`) vouches for every byte of the certificate.
    public static func names(uri: String, in certificateDER: [UInt8]) -> Bool {
        let bytes = Array(uri.utf8)
        guard bytes.count < 128 else { return false }
        let needle = [0x86, UInt8(bytes.count)] + bytes
        guard needle.count <= certificateDER.count else { return false }
        for start in 0...(certificateDER.count - needle.count) where certificateDER[start] == needle[0] {
            if certificateDER[start..<start + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }

    private static func parse(_ der: [UInt8]) -> OpaquePointer? {
        der.withUnsafeBytes { bytes -> OpaquePointer? in
            var cursor: UnsafePointer<UInt8>? = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
            guard cursor != nil else { return nil }
            return d2i_X509(nil, &cursor, bytes.count)
        }
    }

    private static func der(_ certificate: OpaquePointer) -> [UInt8] {
        let length = i2d_X509(certificate, nil)
        guard length > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: Int(length))
        out.withUnsafeMutableBufferPointer { buffer in
            var cursor = buffer.baseAddress
            _ = i2d_X509(certificate, &cursor)
        }
        return out
    }

    private static func withBIO<T>(_ bytes: [UInt8], _ body: (OpaquePointer) -> T?) -> T? {
        bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            let result = body(bio)
            ERR_clear_error()
            return result
        }
    }
}
