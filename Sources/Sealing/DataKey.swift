/// A data key: the AES-256-GCM key that seals values, with its id and check value.
///
/// The check value is derived from the key (HMAC of a fixed label), so a value sealed under a
/// different key that happens to carry the same id is recognised as such instead of looking
/// tampered. It reveals nothing usable about the key.
public final class DataKey: Sendable {
    public let id: UInt32
    public let cipher: AES256GCM
    public let checkValue: UInt16

    public init(id: UInt32, key: SymmetricKey) {
        precondition(id != 0, "data key id 0 is reserved")
        self.id = id
        self.cipher = AES256GCM(key: key)
        let mac = HMACSHA256.authenticate(Array("crm.seal.key-check.v1".utf8), key: key)
        self.checkValue = UInt16(mac[0]) << 8 | UInt16(mac[1])
    }

    public var material: SymmetricKey { cipher.key }
}

/// What a reader knows about a data key id found in a sealed value's header.
public enum DataKeyLookup: Sendable {
    case available(DataKey)
    /// The key existed and was retired after every value sealed with it had been re-sealed.
    case retired
    case unknown
}
