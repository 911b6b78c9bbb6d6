import CRMClient
import Transport

/// Identities and endpoints from text: what parses prints back to the same text and parses to
/// the same value (one canonical spelling per identity).
enum IdentityHarness {
    static func run(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        for candidate in [text, "crm://member/" + text, "crm://client/" + text] {
            if let identity = PeerIdentity(uri: candidate) {
                precondition(identity.description == candidate, "\(candidate) parsed as \(identity)")
                precondition(PeerIdentity(uri: identity.description) == identity)
                if case .client(let name) = identity {
                    precondition(PeerIdentity.isValidClientName(name) && name.utf8.allSatisfy { $0 < 0x80 })
                }
            }
        }
        if let endpoint = Endpoint(text) {
            precondition((0...65_535).contains(endpoint.port), "port \(endpoint.port)")
            precondition(Endpoint(endpoint.description) == endpoint, "\(text) → \(endpoint) does not parse back")
        }
    }
}
