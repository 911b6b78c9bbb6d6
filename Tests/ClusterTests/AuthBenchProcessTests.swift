import ClusterHarness
import Foundation
import Testing

/// The short form of `crm-bench auth`: password checks at each concurrency, then sign-ins
/// through a real cluster's front.
extension RealProcessTests {
    @Suite struct AuthBenchProcessTests {
        @Test func crmBenchAuthChecksPasswordsAndSignsInAtEachConcurrency() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let file = try cluster.writeClusterFile()
            let password = "correct horse battery staple"
            let bootstrap = try ProcessCluster.tool(
                "crmctl", ["users", "bootstrap", "bench-admin", "--cluster", file], input: Data((password + "\n").utf8))
            try #require(bootstrap.status == 0, "\(bootstrap.errors)")
            let principal = try ProcessCluster.tool("crmctl", ["clients", "put", "app", "--cluster", file])
            try #require(principal.status == 0, "\(principal.errors)")
            let run = try ProcessCluster.tool(
                "crm-bench",
                [
                    "auth", "--concurrency", "1,2", "--duration", "0.3", "--json", "--login-as", "bench-admin",
                    "--cluster", file,
                ], input: Data((password + "\n").utf8))
            try #require(run.status == 0, "crm-bench auth failed: \(run.errors)")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [[String: Any]])
            #expect(rows.compactMap { $0["what"] as? String } == ["check", "check", "unknown", "login", "login"])
            #expect(rows.compactMap { $0["concurrency"] as? Int } == [1, 2, 1, 1, 2])
            let unknown = try #require(rows.first { $0["what"] as? String == "unknown" })
            #expect(unknown["known_p50_ms"] is Double, "the unknown row carries the interleaved known user's p50")
            for row in rows {
                #expect((row["checks"] as? Int ?? 0) > 0, "\(row)")
                #expect((row["p50_ms"] as? Double ?? 0) > 1, "an Argon2id check of 19 MiB takes milliseconds: \(row)")
            }
        }
    }
}
