import NIOSSL
import Raft

/// Who a certificate says its holder is. Member certificates carry the URI
/// `crm://member/<id>`, client certificates `crm://client/<name>` (see cluster/make-certs.sh).
public enum PeerIdentity: Equatable, Hashable, Sendable, CustomStringConvertible {
    case member(NodeID)
    case client(String)

    static let memberPrefix = "crm://member/"
    static let clientPrefix = "crm://client/"

    /// Parses one URI; nil if it is not an identity URI.
    public init?(uri: String) {
        if uri.hasPrefix(Self.memberPrefix), let id = NodeID(uri.dropFirst(Self.memberPrefix.count)), id != 0 {
            self = .member(id)
        } else if uri.hasPrefix(Self.clientPrefix) {
            let name = String(uri.dropFirst(Self.clientPrefix.count))
            guard Self.isValidClientName(name) else { return nil }
            self = .client(name)
        } else {
            return nil
        }
    }

    /// Client names: letters, digits, '.', '_' and '-', at most 128 characters.
    public static func isValidClientName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy { $0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }
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
