import CRMClient
import CRMProto
import Foundation
import GRPCCore
import NIOCore
import Testing

@testable import Node

/// The caller of each gRPC connection, learnt once at its TLS handshake.
@Suite struct CallerDirectoryTests {
    /// Addresses are written as gRPC writes them in a server context (the lookup's key).
    @Test func addressesAreNamedAsGRPCNamesThem() throws {
        let v4 = try SocketAddress.makeAddressResolvingHost("127.0.0.1", port: 7101)
        let v6 = try SocketAddress.makeAddressResolvingHost("::1", port: 7101)
        #expect(CallerDirectory.peerName(v4) == "ipv4:127.0.0.1:7101")
        #expect(CallerDirectory.peerName(v6) == "ipv6:[::1]:7101")
        #expect(CallerDirectory.peerName(nil) == nil)
    }

    /// A member's own listener on real mutual TLS: a call is authorized through the entry its
    /// connection's handshake made, and the entry goes when the connection closes.
    @Test func aConnectionsCallerIsRecordedAtItsHandshakeAndForgottenWhenItCloses() async throws {
        let files = try LocalClusterFiles(ids: [1])
        let node = try await files.startNode(1)
        let callers = try #require(node.authorization?.callers)
        #expect(await waitUntil { node.engine?.currentStatus.role == .leader })
        let before = callers.count
        let address = files.cluster.addresses(1).client
        let connection = try MemberConnection(host: address.host, port: address.port, tls: files.cluster.tls())
        var request = Crm_V1_PutRequest()
        request.key = Data("caller".utf8)
        request.value = Data("recorded".utf8)
        _ = try await connection.kv.put(request)
        #expect(callers.count == before + 1)
        await connection.close()
        #expect(await waitUntil { callers.count == before })
        await node.stop()
    }
}
