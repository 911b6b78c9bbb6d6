import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Transport
import X509

extension ServerContext {
    /// The caller's client certificate (the TLS layer has already checked that the cluster CA
    /// signed it).
    var callerCertificate: Certificate? {
        (transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate
    }

    /// The identity in the caller's client certificate; nil when it names none.
    var callerIdentity: PeerIdentity? {
        guard let certificate = callerCertificate, let names = try? certificate.extensions.subjectAlternativeNames
        else { return nil }
        return PeerIdentity(
            uris: names.compactMap { name -> String? in
                if case .uniformResourceIdentifier(let uri) = name { return uri }
                return nil
            })
    }
}

/// Who may call what.
struct Authorization: Sendable {
    /// Client names allowed on the admin API.
    let admins: Set<String>
    /// Certificates refused although the CA signed them.
    let denyList: DenyList

    /// The KV API: any client or member certificate of the cluster that is not denied.
    func requireClient(_ context: ServerContext) throws -> PeerIdentity {
        guard let identity = context.callerIdentity, let certificate = context.callerCertificate else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "the client certificate names no crm identity (crm://client/<name>); make one with cluster/make-certs.sh"
            )
        }
        if let refusal = denyList.refusal(serial: certificate.serialNumber.bytes, identity: identity) {
            throw RPCError(code: .permissionDenied, message: "certificate refused: \(refusal)")
        }
        return identity
    }

    /// The admin API: a client listed in the config's `admins`.
    func requireAdmin(_ context: ServerContext) throws -> String {
        let identity = try requireClient(context)
        guard case .client(let name) = identity, admins.contains(name) else {
            throw RPCError(
                code: .permissionDenied,
                message: "\(identity) may not use the admin API; list its name under `admins` in the member's config")
        }
        return name
    }
}
