import CRMProto
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// The client side of mutual TLS: the cluster CA, and a client certificate and key.
public struct ClientTLSFiles: Sendable, Equatable {
    public var ca: String
    public var certificate: String
    public var privateKey: String

    public init(ca: String, certificate: String, privateKey: String) {
        self.ca = ca
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

/// A gRPC connection to one member's client or admin API.
public final class MemberConnection: Sendable {
    public let host: String
    public let port: Int
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let task: Task<Void, Never>

    /// Connects (lazily, on the first call) to `host`:`port`. With `expectedMember`, the server
    /// must present that member's certificate (see `ExpectedServerCheck`).
    /// With `bearerToken`, every call carries `authorization: Bearer <token>` unless it names
    /// its own (the session a signed-in user's calls act in).
    public init(
        host: String, port: Int, tls: ClientTLSFiles, expectedMember: UInt64? = nil, maxResponseBytes: Int = 64 << 20,
        bearerToken: String? = nil
    ) throws {
        self.host = host
        self.port = port
        let transport = try HTTP2ClientTransport.Posix(
            target: grpcTarget(host: host, port: port),
            transportSecurity: .mTLS(
                certificateChain: [.file(path: tls.certificate, format: .pem)],
                privateKey: .file(path: tls.privateKey, format: .pem)
            ) { config in
                config.trustRoots = .certificates([.file(path: tls.ca, format: .pem)])
                config.serverCertificateVerification = .noHostnameVerification
            },
            config: .defaults {
                $0.http2.maxFrameSize = 1 << 20
                // A member or front that restarts is back within seconds: reconnect within 100 ms
                // to 2 s rather than the default 1 s to 2 minutes.
                $0.backoff = .init(initial: .milliseconds(100), max: .seconds(2), multiplier: 1.6, jitter: 0.2)
                if let expectedMember {
                    $0.channelDebuggingCallbacks.onCreateTCPConnection = {
                        ExpectedServerCheck.install(on: $0, member: expectedMember)
                    }
                }
            },
            serviceConfig: ServiceConfig())
        let client = GRPCClient(transport: transport, interceptors: bearerToken.map { [BearerToken(token: $0)] } ?? [])
        self.client = client
        task = Task { _ = try? await client.runConnections() }
    }

    public var kv: Crm_V1_KV.Client<HTTP2ClientTransport.Posix> { Crm_V1_KV.Client(wrapping: client) }
    public var admin: Crm_V1_Admin.Client<HTTP2ClientTransport.Posix> { Crm_V1_Admin.Client(wrapping: client) }
    public var records: Crm_V1_Records.Client<HTTP2ClientTransport.Posix> { Crm_V1_Records.Client(wrapping: client) }
    public var directory: Crm_V1_Directory.Client<HTTP2ClientTransport.Posix> {
        Crm_V1_Directory.Client(wrapping: client)
    }

    /// Closes the connection once calls in progress finish.
    public func close() async {
        client.beginGracefulShutdown()
        await task.value
    }
}

/// IP literals as IP targets (a DNS target would put the address in TLS's SNI, which TLS forbids).
public func grpcTarget(host: String, port: Int) -> any ResolvableTarget {
    if host.contains(":") { return .ipv6(host: host, port: port) }
    if host.split(separator: ".").count == 4, host.split(separator: ".").allSatisfy({ UInt8($0) != nil }) {
        return .ipv4(host: host, port: port)
    }
    return .dns(host: host, port: port)
}

/// Adds a session's bearer token to each call that does not carry an `authorization` of its own.
struct BearerToken: ClientInterceptor {
    let token: String

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        if request.metadata[stringValues: "authorization"].first(where: { _ in true }) == nil {
            request.metadata.addString("Bearer \(token)", forKey: "authorization")
        }
        return try await next(request, context)
    }
}
