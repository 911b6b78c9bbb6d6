import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Testing

/// Certificates and keys on real processes (security review F8, F12, F14): a denied
/// certificate is refused on every client entry without a restart, clients check which member
/// answered, and a member runs with core dumps off and its keys out of dumps.
extension RealProcessTests {
    @Suite struct CertificateProcessTests {
        @Test func aMemberRunsWithoutCoreDumpsAndWithItsKeysOutOfDumps() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            for id in cluster.ids {
                let pid = cluster.pid(id)!
                let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
                let core = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") })
                #expect(
                    core.split(separator: " ", omittingEmptySubsequences: true).dropFirst(4).prefix(2) == ["0", "0"],
                    "\(core)")
                #expect(cluster.log(id).contains("process hardened"), "member \(id)")
                #expect(cluster.log(id).contains("core dumps off, not dumpable, key memory"), "member \(id)")
            }
            await cluster.closeConnections()
        }

        @Test func aDeniedCertificateIsRefusedEverywhereWithoutARestart() async throws {
            let cluster = try ProcessCluster(tlsReloadSeconds: 1) { $0.tls.denyFile = "denied" }
            try "# nothing denied yet\n".write(toFile: cluster.directory + "/denied", atomically: true, encoding: .utf8)
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = cluster.ids.first { $0 != leader }!
            var get = Crm_V1_GetRequest()
            get.key = Data("k".utf8)
            get.consistency = .serializable
            let frontGRPC = try MemberConnection(
                host: "127.0.0.1", port: cluster.addresses(front).front.port, tls: cluster.tls("app"))
            _ = try await frontGRPC.kv.get(get, options: ProcessCluster.shortCall)
            #expect(try await cluster.frontHTTP(front, "GET", "/v1/cluster").status == 200)

            try "crm://client/app   # leaked\n".write(
                toFile: cluster.directory + "/denied", atomically: true, encoding: .utf8)
            let refused = await eventually(seconds: 10) {
                (try? await cluster.frontHTTP(front, "GET", "/v1/cluster"))?.status == 403
            }
            #expect(refused, "the front's HTTP listener refuses the denied certificate")
            for port in [cluster.addresses(front).front.port, cluster.addresses(leader).client.port] {
                await #expect(throws: RPCError.self) {
                    do {
                        _ = try await frontGRPC.kv.get(get, options: ProcessCluster.shortCall)
                        let fresh = try MemberConnection(host: "127.0.0.1", port: port, tls: cluster.tls("app"))
                        defer { Task { await fresh.close() } }
                        _ = try await fresh.kv.get(get, options: ProcessCluster.shortCall)
                    } catch let error as RPCError {
                        #expect(
                            error.code == .permissionDenied
                                && error.message.contains("crm://client/app is on the deny list"), "\(error)")
                        throw error
                    }
                }
            }
            // Another client is not affected, and the cluster still works.
            try await cluster.put("still", "works", via: leader)
            #expect(try await cluster.frontHTTP(front, "GET", "/v1/cluster", client: "crmctl").status == 200)
            #expect(cluster.log(front).contains("deny list changed"))
            await frontGRPC.close()
            await cluster.closeConnections()
        }

        /// The CA vouches that a certificate is one of the cluster's, not whose address this is: a
        /// client that dials member 1 and is answered by member 2 refuses to go on.
        @Test func aClientRefusesAMemberThatIsNotTheOneItDialled() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let port = cluster.addresses(2).client.port
            let right = try MemberConnection(host: "127.0.0.1", port: port, tls: cluster.clientTLS, expectedMember: 2)
            _ = try await right.kv.memberState(Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
            await right.close()
            let wrong = try MemberConnection(host: "127.0.0.1", port: port, tls: cluster.clientTLS, expectedMember: 1)
            await #expect(throws: RPCError.self) {
                _ = try await wrong.kv.memberState(Crm_V1_MemberStateRequest(), options: ProcessCluster.shortCall)
            }
            await wrong.close()

            // crmctl with a cluster file whose member 1 points at member 2's admin port.
            let file = try cluster.writeClusterFile()
            var swapped = try ClusterFile.load(path: file)
            swapped.members[0].admin = "\(cluster.addresses(2).admin)"
            #expect(swapped.members[0].id == 1)
            try swapped.write(to: file)
            let status = try ProcessCluster.tool("crmctl", ["status", "--member", "1", "--cluster", file])
            #expect(status.status != 0, "\(status)")
            await cluster.closeConnections()
        }
    }
}
