import Sealing

/// Time-based one-time codes (RFC 6238 over RFC 4226's HOTP): HMAC-SHA-1, 30-second steps from
/// the Unix epoch, 6 digits, the step before and after the current one accepted for clock drift.
public enum TOTP {
    public static let stepMillis: UInt64 = 30_000
    public static let digits = 6
    /// Steps accepted either side of the current one.
    public static let window: UInt64 = 1
    /// The secret's length: 160 bits, as RFC 4226 recommends for HMAC-SHA-1.
    public static let secretBytes = 20

    /// The time step `millis` falls in.
    public static func step(atMillis millis: UInt64) -> UInt64 { millis / stepMillis }

    /// The code for `step` (RFC 4226 section 5.3: dynamic truncation, then modulo 10^digits).
    public static func code(secret: [UInt8], step: UInt64, digits: Int = digits) -> String {
        precondition((6...8).contains(digits), "HOTP codes have 6 to 8 digits")
        var counter = [UInt8](repeating: 0, count: 8)
        for index in 0..<8 { counter[index] = UInt8(truncatingIfNeeded: step >> (56 - 8 * UInt64(index))) }
        let tag = HMACSHA1.authenticate(counter, key: secret)
        let offset = Int(tag[HMACSHA1.byteCount - 1] & 0x0F)
        let binary =
            (UInt32(tag[offset] & 0x7F) << 24) | (UInt32(tag[offset + 1]) << 16) | (UInt32(tag[offset + 2]) << 8)
            | UInt32(tag[offset + 3])
        var modulus: UInt32 = 1
        for _ in 0..<digits { modulus *= 10 }
        let value = String(binary % modulus)
        return String(repeating: "0", count: digits - value.count) + value
    }

    /// The step `code` is valid for at `millis` (within the window) that is above `lastUsed`, or
    /// nil. Every candidate is compared in constant time, so timing tells nothing of which
    /// step (if any) matched.
    public static func acceptedStep(
        of code: String, secret: [UInt8], atMillis millis: UInt64, above lastUsed: UInt64
    ) -> UInt64? {
        guard code.utf8.count == digits, code.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        let now = step(atMillis: millis)
        var accepted: UInt64?
        for candidate in (now &- min(now, window))...(now &+ window) {
            let expected = TOTP.code(secret: secret, step: candidate)
            if constantTimeEqual(Array(expected.utf8), Array(code.utf8)), candidate > lastUsed, accepted == nil {
                accepted = candidate
            }
        }
        return accepted
    }

    /// The `otpauth://` URI authenticator apps read from a QR code (the Key Uri Format).
    public static func provisioningURI(secret: [UInt8], account: String, issuer: String) -> String {
        let (issuer, account) = (issuer.addingPercentEncodingForURI(), account.addingPercentEncodingForURI())
        return "otpauth://totp/\(issuer):\(account)?secret=\(Base32.encode(secret))"
            + "&issuer=\(issuer)&algorithm=SHA1&digits=\(digits)&period=\(stepMillis / 1000)"
    }
}

extension String {
    /// Percent-encodes everything but RFC 3986's unreserved characters.
    func addingPercentEncodingForURI() -> String {
        var out = ""
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]], as: UTF8.self)
            }
        }
        return out
    }
}

/// RFC 4648 base32 without padding: how authenticator apps take a secret typed in, and the
/// alphabet of recovery codes (no 0/1/8/9 to confuse with O/I/B/g).
public enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of `text` (case, spaces, dashes and padding ignored), or nil for any other
    /// character or leftover bits that are not zero.
    public static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for byte in text.utf8 where byte != UInt8(ascii: " ") && byte != UInt8(ascii: "-") && byte != UInt8(ascii: "=")
        {
            let upper = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) ? byte - 32 : byte
            guard let value = alphabet.firstIndex(of: upper) else { return nil }
            buffer = (buffer << 5) | UInt32(value)
            bits += 5
            if bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        guard buffer == 0 else { return nil }
        return out
    }
}
