import ClusterHarness
import Foundation
import Testing

/// The short form of `crm-bench auth`: each concurrency checks passwords, every check verified.
extension RealProcessTests {
    @Suite struct AuthBenchProcessTests {
        @Test func crmBenchAuthChecksPasswordsAtEachConcurrency() throws {
            let run = try ProcessCluster.tool(
                "crm-bench", ["auth", "--concurrency", "1,2", "--duration", "0.3", "--json"])
            try #require(run.status == 0, "crm-bench auth failed: \(run.errors)")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [[String: Any]])
            #expect(rows.compactMap { $0["concurrency"] as? Int } == [1, 2])
            for row in rows {
                #expect((row["checks"] as? Int ?? 0) > 0, "\(row)")
                #expect((row["p50_ms"] as? Double ?? 0) > 1, "an Argon2id check of 19 MiB takes milliseconds: \(row)")
            }
        }
    }
}
