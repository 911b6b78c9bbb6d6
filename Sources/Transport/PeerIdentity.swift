import NIOSSL
import Raft

/// Who a certificate says its holder is. Member certificates carry the URI
/// `crm://member/<id>`, client certificates `crm://client/<name>` (see cluster/make-certs.sh).
public enum PeerIdentity: Equatable, Hashable, Sendable, CustomStringConvertible {
    case member(NodeID)
    case client(String)

    static let memberPrefix = "crm://member/"
    static let clientPrefix = "crm://client/"

    /// Parses one URI; nil if it is not an identity URI. Only the canonical spelling counts:
    /// a member id in plain decimal digits without a leading zero (`crm://member/5`, never
    /// `+5` or `05`), a client name in ASCII letters, digits, '.', '_' and '-' — so that one
    /// identity has exactly one text, in the config's lists as in the rate limiter's table.
    public init?(uri: String) {
        if uri.hasPrefix(Self.memberPrefix) {
            let digits = uri.utf8.dropFirst(Self.memberPrefix.utf8.count)
            guard (1...20).contains(digits.count), digits.first != UInt8(ascii: "0"),
                digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                let id = NodeID(String(decoding: digits, as: UTF8.self))
            else { return nil }
            self = .member(id)
        } else if uri.hasPrefix(Self.clientPrefix) {
            let name = String(uri.dropFirst(Self.clientPrefix.count))
            guard Self.isValidClientName(name) else { return nil }
            self = .client(name)
        } else {
            return nil
        }
    }

    /// Client names: ASCII letters, digits, '.', '_' and '-', 1 to 128 characters (as
    /// cluster/make-certs.sh makes them).
    public static func isValidClientName(_ name: String) -> Bool {
        (1...128).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "_")
                    || byte == UInt8(ascii: "-")
            }
    }

    /// The single identity among a certificate's URI names; nil if they name none, or more than one.
    public init?(uris: some Sequence<String>) {
        let found = uris.compactMap(PeerIdentity.init(uri:))
        guard found.count == 1 else { return nil }
        self = found[0]
    }

    /// The single identity a certificate names; nil if it names none, or more than one.
    public init?(certificate: NIOSSLCertificate) {
        let uris = certificate._subjectAlternativeNames().filter { $0.nameType == .uri }.map { name in
            name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
        }
        self.init(uris: uris)
    }

    public var description: String {
        switch self {
        case .member(let id): return Self.memberPrefix + "\(id)"
        case .client(let name): return Self.clientPrefix + name
        }
    }
}
