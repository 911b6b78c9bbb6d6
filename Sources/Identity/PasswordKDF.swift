import CArgon2
import CLibCrypto
import Sealing

/// The key-derivation functions behind stored passwords: Argon2id through libargon2 (the
/// pepper as Argon2's secret input), PBKDF2 and scrypt through OpenSSL's libcrypto for
/// imported hashes. Each computes the tag for a password and a stored hash's parameters.
enum PasswordKDF {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func tag(of password: [UInt8], like stored: StoredPassword, pepper: SymmetricKey) throws -> [UInt8] {
        switch stored {
        case .argon2id(let parameters, let salt, let tag):
            return try argon2id(password, salt: salt, parameters: parameters, pepper: pepper, tagBytes: tag.count)
        case .pbkdf2(let digest, let iterations, let salt, let tag, _):
            return try pbkdf2(password, salt: salt, iterations: iterations, digest: digest, tagBytes: tag.count)
        case .scrypt(let logN, let r, let p, let salt, let tag):
            return try scrypt(password, salt: salt, logN: logN, r: r, p: p, tagBytes: tag.count)
        }
    }

    static func argon2id(
        _ password: [UInt8], salt: [UInt8], parameters: Argon2Parameters, pepper: SymmetricKey, tagBytes: Int
    ) throws -> [UInt8] {
        var secret = pepper.withUnsafeBytes { Array($0) }
        defer { scrub(&secret) }
        return try argon2id(password, salt: salt, parameters: parameters, secret: secret, tagBytes: tagBytes)
    }

    /// Argon2id (version 0x13) of `password` with Argon2's secret and associated-data inputs.
    static func argon2id(
        _ password: [UInt8], salt: [UInt8], parameters: Argon2Parameters, secret: [UInt8],
        associatedData: [UInt8] = [], tagBytes: Int
    ) throws -> [UInt8] {
        precondition(parameters.isWithinBounds && (16...64).contains(tagBytes), "argon2id within bounds")
        var tag = [UInt8](repeating: 0, count: tagBytes)
        var inputs = (password: password, salt: salt, secret: secret, data: associatedData)
        defer {
            scrub(&inputs.password)
            scrub(&inputs.secret)
        }
        let status = tag.withUnsafeMutableBufferPointer { out in
            inputs.password.withUnsafeMutableBufferPointer { pwd in
                inputs.salt.withUnsafeMutableBufferPointer { saltBytes in
                    inputs.secret.withUnsafeMutableBufferPointer { key in
                        inputs.data.withUnsafeMutableBufferPointer { data in
                            var context = argon2_context(
                                out: out.baseAddress, outlen: UInt32(out.count), pwd: pwd.baseAddress,
                                pwdlen: UInt32(pwd.count), salt: saltBytes.baseAddress,
                                saltlen: UInt32(saltBytes.count), secret: key.baseAddress,
                                secretlen: UInt32(key.count), ad: data.baseAddress, adlen: UInt32(data.count),
                                t_cost: parameters.iterations, m_cost: parameters.memoryKiB,
                                lanes: parameters.parallelism, threads: parameters.parallelism,
                                version: ARGON2_VERSION_13.rawValue, allocate_cbk: nil, free_cbk: nil, flags: 0)
                            return argon2_ctx(&context, Argon2_id)
                        }
                    }
                }
            }
        }
        guard status == ARGON2_OK.rawValue else {
            throw Failure(description: "argon2id: " + String(cString: argon2_error_message(status)))
        }
        return tag
    }

    static func pbkdf2(
        _ password: [UInt8], salt: [UInt8], iterations: UInt32, digest: StoredPassword.PBKDF2Digest, tagBytes: Int
    ) throws -> [UInt8] {
        var tag = [UInt8](repeating: 0, count: tagBytes)
        let function = digest == .sha256 ? EVP_sha256() : EVP_sha512()
        let status = password.withUnsafeBufferPointer { pwd in
            pwd.withMemoryRebound(to: CChar.self) { pwdChars in
                PKCS5_PBKDF2_HMAC(
                    pwdChars.baseAddress, Int32(pwd.count), salt, Int32(salt.count), Int32(iterations), function,
                    Int32(tagBytes), &tag)
            }
        }
        guard status == 1 else { throw Failure(description: "pbkdf2 failed") }
        return tag
    }

    static func scrypt(
        _ password: [UInt8], salt: [UInt8], logN: UInt8, r: UInt32, p: UInt32, tagBytes: Int
    ) throws -> [UInt8] {
        var tag = [UInt8](repeating: 0, count: tagBytes)
        let status = password.withUnsafeBufferPointer { pwd in
            pwd.withMemoryRebound(to: CChar.self) { pwdChars in
                EVP_PBE_scrypt(
                    pwdChars.baseAddress, pwd.count, salt, salt.count, UInt64(1) << logN, UInt64(r), UInt64(p),
                    2 * StoredPassword.maxScryptMemory, &tag, tagBytes)
            }
        }
        guard status == 1 else { throw Failure(description: "scrypt failed") }
        return tag
    }
}
