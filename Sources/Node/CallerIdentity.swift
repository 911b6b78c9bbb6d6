import GRPCCore
import Transport

/// Who may call what.
struct Authorization: Sendable {
    /// Client names allowed on the admin API.
    let admins: Set<String>
    /// Certificates refused although the CA signed them.
    let denyList: DenyList
    /// The caller on each connection to this member's gRPC listeners.
    let callers = CallerDirectory()

    /// The KV API: any client or member certificate of the cluster that is not denied.
    func requireClient(_ context: ServerContext) throws -> PeerIdentity {
        guard let caller = callers.caller(of: context), let identity = caller.identity else {
            throw RPCError(
                code: .unauthenticated,
                message:
                    "the client certificate names no crm identity (crm://client/<name>); make one with cluster/make-certs.sh"
            )
        }
        if let refusal = denyList.refusal(serial: caller.serial, identity: identity) {
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
