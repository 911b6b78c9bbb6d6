import Sealing

extension StorageEngine {
    /// A keyed hash (HMAC-SHA-256 under the store's index key) of a personal value, for use in
    /// index keys: "find the contact with this e-mail" looks up `lookupToken("email", normalised)`
    /// instead of putting the address itself into a key. Deterministic for the life of the store;
    /// without the index key it cannot be reversed or confirmed by guessing.
    ///
    /// `purpose` separates index spaces (an e-mail and a phone number never share a token).
    /// Normalise `value` first (for example lower-case e-mail addresses).
    public func lookupToken(purpose: String, value: [UInt8]) -> [UInt8] {
        let purposeBytes = Array(purpose.utf8)
        precondition(!purposeBytes.isEmpty && purposeBytes.count <= 255, "lookup token purpose must be 1...255 bytes")
        var message = [UInt8(purposeBytes.count)] + purposeBytes + value
        defer { scrub(&message) }
        return HMACSHA256.authenticate(message, key: keyRing.indexKey)
    }
}
