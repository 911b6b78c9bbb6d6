/// Why the CRM cannot use its keys. None of these texts holds key material or personal data.
public enum CRMKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The key-encryption key cannot be used (file missing or refused, a KMS refusing): the CRM
    /// answers UNAVAILABLE until it can.
    case keyUnavailable(String)
    /// The cluster's key set was wrapped by another key-encryption key than this member's: the
    /// CRMKEY alarm; the member serves no CRM call.
    case wrongKey(expected: String, actual: String)
    /// A key set record does not open or does not match its check value.
    case keySetDamaged(version: UInt64, reason: String)
    /// Something was sealed under a key-set version this member does not hold.
    case unknownKeySet(version: UInt64)
    /// A wrapped subject key or a sealed field does not open where it is.
    case doesNotOpen(String)

    public var description: String {
        switch self {
        case .keyUnavailable(let why): return "CRM key unavailable: \(why)"
        case .wrongKey(let expected, let actual):
            return "the cluster's CRM key set is wrapped by key \(expected), but this member's CRM key is \(actual) "
                + "(CRMKEY): give every member the same crm.key_file"
        case .keySetDamaged(let version, let reason): return "CRM key set v\(version) is damaged: \(reason)"
        case .unknownKeySet(let version): return "CRM key set v\(version) is not known to this member"
        case .doesNotOpen(let what): return "\(what) does not open: altered, moved, or sealed under another key"
        }
    }
}
