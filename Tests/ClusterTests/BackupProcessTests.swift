import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import Node
import Testing

/// Backups on real processes: `crmctl backup create` on the leader writes a backup of the
/// records into both of its targets (audited before it starts), `backup list` shows it on that
/// member, `backup verify --deep` recounts it, and a flipped byte in one chunk is a named
/// failure of verify (exit 1).
extension RealProcessTests {
    @Suite struct BackupProcessTests {
        static func json(_ output: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(output.utf8)) }

        @Test func aBackupIsTakenListedVerifiedAndItsDamageNamed() async throws {
            let scratch = NSTemporaryDirectory() + "crm-backups-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            try Data(key.utf8).write(to: URL(fileURLWithPath: scratch + "/backup.key"))
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: scratch + "/backup.key")
            let cluster = try ProcessCluster {
                $0.backup = NodeConfig.Backup(
                    targets: [scratch + "/m\($0.id)-a", scratch + "/m\($0.id)-b"], keyFile: scratch + "/backup.key")
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            _ = try await cluster.signInRecordsUser()
            let records = try cluster.connection(leader, .client).records
            for number in 0..<20 {
                var create = Crm_V1_CreateRecordRequest()
                create.entity = "person"
                create.fields = ["last_name": .with { $0.text = "Backed-up \(number)" }]
                _ = try await records.create(create, options: ProcessCluster.shortCall)
            }
            let file = try cluster.writeClusterFile()

            let created = try ProcessCluster.tool("crmctl", ["backup", "create", "--json", "--cluster", file])
            let info = try #require((Self.json(created.output) as? [[String: Any]])?.first, "\(created.errors)")
            let id = try #require(info["id"] as? String)
            #expect(info["member"] as? Int == Int(leader) && (info["counts"] as? [String: Int])?["person"] == 20)
            for target in ["a", "b"] {
                #expect(FileManager.default.fileExists(atPath: scratch + "/m\(leader)-\(target)/\(id)/manifest.json"))
            }
            let listed = try ProcessCluster.tool("crmctl", ["backup", "list", "--json", "--cluster", file])
            let ids = (Self.json(listed.output) as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(ids == [id, id], "one backup, in both targets: \(listed.output)")

            let deep = try ProcessCluster.tool(
                "crmctl", ["backup", "verify", id, "--deep", "--json", "--cluster", file])
            let report = Self.json(deep.output) as? [String: Any]
            #expect(deep.status == 0 && report?["problem"] as? String == "", "\(deep.output) \(deep.errors)")
            #expect((report?["records"] as? Int ?? 0) > 40, "\(deep.output)")

            // The audit trail holds the backup's entry.
            let entries = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "backup.create", "--json", "--cluster", file])
            #expect(entries.output.contains(id), "\(entries.output)")

            // One flipped byte in the first target's first chunk: verify names the chunk.
            let chunk = scratch + "/m\(leader)-a/\(id)/data-000000.chunk"
            var bytes = try #require(FileManager.default.contents(atPath: chunk))
            bytes[bytes.count / 2] ^= 0x20
            try bytes.write(to: URL(fileURLWithPath: chunk))
            let damaged = try ProcessCluster.tool("crmctl", ["backup", "verify", id, "--cluster", file])
            #expect(damaged.status == 1, "\(damaged.output)")
            #expect(damaged.errors.contains("data-000000.chunk differs from the manifest's hash"), "\(damaged.errors)")
            await cluster.closeConnections()
        }
    }
}
