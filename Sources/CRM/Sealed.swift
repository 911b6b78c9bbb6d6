import Sealing

/// AES-256-GCM with a fresh random nonce, in the form the CRM stores everything it seals:
/// nonce (12) ‖ ciphertext ‖ tag (16). The associated data binds each ciphertext to its place.
public enum Sealed {
    public static let overheadBytes = AES256GCM.nonceByteCount + AES256GCM.tagByteCount

    public static func seal(_ plaintext: [UInt8], under key: SymmetricKey, binding aad: [UInt8]) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: overheadBytes + plaintext.count)
        let cipher = AES256GCM(key: key)
        try output.withUnsafeMutableBytes { buffer in
            let nonce = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<AES256GCM.nonceByteCount])
            try SecureRandom.fillNonce(nonce)
            try plaintext.withUnsafeBytes { input in
                try aad.withUnsafeBytes { aadBytes in
                    try cipher.seal(
                        input, nonce: UnsafeRawBufferPointer(nonce), associatedData: aadBytes,
                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[AES256GCM.nonceByteCount...]))
                }
            }
        }
        return output
    }

    /// The plaintext, or nil when `sealed` is short, altered, or sealed under another key or place.
    public static func open(_ sealed: [UInt8], under key: SymmetricKey, binding aad: [UInt8]) throws -> [UInt8]? {
        guard sealed.count >= overheadBytes else { return nil }
        var plain = [UInt8](repeating: 0, count: sealed.count - overheadBytes)
        let cipher = AES256GCM(key: key)
        let authentic = try sealed.withUnsafeBytes { input in
            try aad.withUnsafeBytes { aadBytes in
                try plain.withUnsafeMutableBytes { output in
                    try cipher.open(
                        UnsafeRawBufferPointer(rebasing: input[AES256GCM.nonceByteCount...]),
                        nonce: UnsafeRawBufferPointer(rebasing: input[0..<AES256GCM.nonceByteCount]),
                        associatedData: aadBytes, into: output)
                }
            }
        }
        return authentic ? plain : nil
    }
}
