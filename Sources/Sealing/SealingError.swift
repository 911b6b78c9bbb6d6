/// Failures of the cryptographic primitives themselves (not of the data they check).
public enum SealingError: Error, Equatable, CustomStringConvertible {
    case randomUnavailable
    case cipherFailure(String)
    case inputTooLarge(bytes: Int, maximum: Int)

    public var description: String {
        switch self {
        case .randomUnavailable:
            return "OpenSSL's random generator failed; the process cannot create keys or nonces safely"
        case .cipherFailure(let step):
            return "OpenSSL cipher operation failed at \(step)"
        case .inputTooLarge(let bytes, let maximum):
            return "input of \(bytes) bytes exceeds the maximum of \(maximum) bytes"
        }
    }
}
