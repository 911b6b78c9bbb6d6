import Foundation

/// Which passwords are accepted (ASVS V6, NIST SP 800-63B): 12 to 128 characters after NFKC
/// normalisation, any Unicode but control characters, no composition rules; refused when it is
/// one of the most common passwords (alone, repeated, or with only digits and symbols around
/// it), one character repeated, or holds the username or the e-mail's local part.
public struct PasswordPolicy: Sendable {
    public var minimumCharacters = 12
    public var maximumCharacters = 128
    /// Input beyond this many bytes is refused before anything else looks at it.
    public static let maximumBytes = 1024

    public init(minimumCharacters: Int = 12) {
        precondition(minimumCharacters >= 8 && minimumCharacters <= 128, "a minimum of 8 to 128 characters")
        self.minimumCharacters = minimumCharacters
    }

    /// The form passwords are hashed and compared in: NFKC, so that composed and decomposed
    /// letters (and compatibility forms) are the same password.
    public static func normalised(_ password: String) -> String { password.precomposedStringWithCompatibilityMapping }

    /// Why `password` is refused for the user `username` with `email` (nil: accepted). The
    /// reasons name the rule, never the password.
    public func refusal(of password: String, username: String, email: String? = nil) -> PasswordRefusal? {
        guard password.utf8.count <= Self.maximumBytes else { return .tooLong(maximum: maximumCharacters) }
        let normalised = Self.normalised(password)
        let characters = normalised.unicodeScalars.count
        if normalised.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return .controlCharacter
        }
        guard characters >= minimumCharacters else { return .tooShort(minimum: minimumCharacters) }
        guard characters <= maximumCharacters else { return .tooLong(maximum: maximumCharacters) }
        let lowered = normalised.lowercased()
        if Set(lowered.unicodeScalars).count == 1 { return .repeatedCharacter }
        if CommonPasswords.isCommon(lowered) { return .common }
        let name = Self.normalised(username).lowercased()
        if name.unicodeScalars.count >= 3, lowered.contains(name) { return .containsUsername }
        if let email, let at = email.lastIndex(of: "@") {
            let local = Self.normalised(String(email[..<at])).lowercased()
            if local.unicodeScalars.count >= 3, lowered.contains(local) { return .containsEmail }
        }
        return nil
    }
}

public enum PasswordRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case tooShort(minimum: Int)
    case tooLong(maximum: Int)
    case controlCharacter
    case repeatedCharacter
    case common
    case containsUsername
    case containsEmail

    public var description: String {
        switch self {
        case .tooShort(let minimum): return "the password needs at least \(minimum) characters"
        case .tooLong(let maximum): return "the password has more than \(maximum) characters"
        case .controlCharacter: return "the password holds a control character (such as NUL)"
        case .repeatedCharacter: return "the password is one character repeated"
        case .common: return "the password is among the most common passwords; choose another"
        case .containsUsername: return "the password holds the username"
        case .containsEmail: return "the password holds the e-mail address's local part"
        }
    }
}

/// The committed list of the most common passwords, as a set (built once, on first use).
enum CommonPasswords {
    static let set: Set<Substring> = Set(list.split(separator: "\n"))

    /// Whether `lowered` is a common password, repeated, or one with only digits and symbols
    /// before or after it.
    static func isCommon(_ lowered: String) -> Bool {
        if set.contains(Substring(lowered)) { return true }
        let letters = lowered.drop { !$0.isLetter }.reversed().drop { !$0.isLetter }.reversed()
        let core = String(letters)
        if core.count >= 4, core.count < lowered.count, set.contains(Substring(core)) { return true }
        for length in 4...max(4, lowered.count / 2) where lowered.count % length == 0 {
            let unit = lowered.prefix(length)
            if set.contains(unit), String(repeating: String(unit), count: lowered.count / length) == lowered {
                return true
            }
        }
        return false
    }
}
