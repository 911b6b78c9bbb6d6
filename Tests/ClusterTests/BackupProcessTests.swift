import Backup
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
/// failure of verify (exit 1); `backup pull` copies it to another directory and verifies it
/// there. A 3-member cluster's backup restored into a new member
/// (`crm-node --restore-from`) reads back with the manifest's counts and digest, serves alone as
/// leader with its users and records, passes `crm check` and `audit verify` with the restore's
/// own entry at the head; a restore into a non-empty data directory is refused.
extension RealProcessTests {
    @Suite struct BackupProcessTests {
        static func json(_ output: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(output.utf8)) }

        /// A scratch directory with a backup key, and a cluster (spare member 4 not started)
        /// whose members back up into two targets each (on a schedule only when asked), with 20
        /// persons.
        static func backedUpCluster(
            everyHours: Int = 0, archiveSeconds: Int = 0
        ) async throws -> (ProcessCluster, scratch: String, leader: UInt64) {
            let scratch = NSTemporaryDirectory() + "crm-backups-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            try Data(key.utf8).write(to: URL(fileURLWithPath: scratch + "/backup.key"))
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: scratch + "/backup.key")
            let cluster = try ProcessCluster(spares: [4]) {
                $0.backup = NodeConfig.Backup(
                    targets: [scratch + "/m\($0.id)-a", scratch + "/m\($0.id)-b"], keyFile: scratch + "/backup.key",
                    everyHours: everyHours, archiveSeconds: archiveSeconds)
            }
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            _ = try await cluster.signInRecordsUser()
            try await createPersons(cluster, leader, 0..<20)
            return (cluster, scratch, leader)
        }

        static func createPersons(_ cluster: ProcessCluster, _ leader: UInt64, _ numbers: Range<Int>) async throws {
            let records = try cluster.connection(leader, .client).records
            for number in numbers {
                var create = Crm_V1_CreateRecordRequest()
                create.entity = "person"
                create.fields = ["last_name": .with { $0.text = "Backed-up \(number)" }]
                _ = try await records.create(create, options: ProcessCluster.shortCall)
            }
        }

        /// Starts restored member 4, which must lead alone, and lists its persons as the app.
        static func personsOnRestoredMember(_ cluster: ProcessCluster) async throws -> [Crm_V1_Record] {
            try cluster.start(4)
            #expect(await cluster.waitForLeader(among: [4]) == 4)
            let token = try await cluster.signIn("records-harness", through: "app", leader: 4)
            var list = Crm_V1_ListRecordsRequest()
            list.entity = "person"
            list.pageSize = 100
            return try await cluster.connection(4, .client, as: "app").records.list(
                list, metadata: ["authorization": "Bearer \(token)"], options: ProcessCluster.shortCall
            ).records
        }

        /// `crmctl backup create --json`: the backup's description and id.
        static func createBackup(_ file: String) throws -> (info: [String: Any], id: String) {
            let created = try ProcessCluster.tool("crmctl", ["backup", "create", "--json", "--cluster", file])
            let info = try #require((json(created.output) as? [[String: Any]])?.first, "\(created.errors)")
            return (info, try #require(info["id"] as? String))
        }

        @Test func aBackupIsTakenListedVerifiedAndItsDamageNamed() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let file = try cluster.writeClusterFile()
            let (info, id) = try Self.createBackup(file)
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

            // A copy on "another host", verified there.
            let key = scratch + "/backup.key"
            let pulled = try ProcessCluster.tool(
                "crmctl", ["backup", "pull", id, "--to", scratch + "/offsite", "--backup-key", key, "--cluster", file])
            #expect(pulled.status == 0 && pulled.output.contains("holds (deep)"), "\(pulled.output) \(pulled.errors)")
            #expect(!BackupsOnDisk.ids(in: scratch + "/offsite").isEmpty)

            // One flipped byte in the first target's first chunk: verify names the chunk.
            let chunk = scratch + "/m\(leader)-a/\(id)/data-000000.chunk"
            var bytes = try #require(FileManager.default.contents(atPath: chunk))
            bytes[bytes.count / 2] ^= 0x20
            try bytes.write(to: URL(fileURLWithPath: chunk))
            let damaged = try ProcessCluster.tool("crmctl", ["backup", "verify", id, "--cluster", file])
            #expect(damaged.status == 1, "\(damaged.output)")
            #expect(damaged.errors.contains("data-000000.chunk differs from the manifest's hash"), "\(damaged.errors)")
            // The copy elsewhere still holds; damaged too, it is named the same way.
            let offsite = [
                "backup", "verify", id, "--dir", scratch + "/offsite", "--backup-key", key, "--cluster", file,
            ]
            #expect(try ProcessCluster.tool("crmctl", offsite).status == 0)
            let copied = scratch + "/offsite/\(id)/data-000000.chunk"
            var copy = try #require(FileManager.default.contents(atPath: copied))
            copy[copy.count / 3] ^= 0x04
            try copy.write(to: URL(fileURLWithPath: copied))
            let offsiteDamaged = try ProcessCluster.tool("crmctl", offsite)
            #expect(offsiteDamaged.status == 1 && offsiteDamaged.errors.contains("differs from the manifest's hash"))
            await cluster.closeConnections()
        }

        @Test func aClustersBackupRestoresIntoANewMemberThatServesAlone() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let (info, id) = try Self.createBackup(try cluster.writeClusterFile())
            let auditHead = try #require(info["audit_head_seq"] as? Int)
            await cluster.closeConnections()
            cluster.stopAll()

            // Into spare 4's data directory, offline: deep-verified, loaded, read back.
            let backup = scratch + "/m\(leader)-b/\(id)"
            let restore = [
                "--config", cluster.configPath(4), "--restore-from", backup, "--backup-key", scratch + "/backup.key",
            ]
            let restored = try ProcessCluster.tool("crm-node", restore)
            #expect(restored.status == 0 && restored.output.contains("restored backup \(id)"), "\(restored.errors)")
            let again = try ProcessCluster.tool("crm-node", restore)
            #expect(again.status == 1 && again.errors.contains("is not empty"), "\(again.errors)")

            // Member 4 serves alone, with the cluster's users and records.
            let persons = try await Self.personsOnRestoredMember(cluster)
            #expect(persons.count == 20)
            let tls = cluster.tls("crmctl")
            let direct = [
                "--endpoint", "\(cluster.addresses(4).admin)", "--ca", tls.ca, "--cert", tls.certificate, "--key",
                tls.privateKey,
            ]
            let check = try ProcessCluster.tool("crmctl", ["crm", "check"] + direct)
            #expect(check.status == 0, "\(check.output) \(check.errors)")
            let verify = try ProcessCluster.tool("crmctl", ["audit", "verify"] + direct)
            #expect(verify.status == 0, "\(verify.output) \(verify.errors)")
            let tail = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "backup.restore", "--json"] + direct)
            let entries = Self.json(tail.output) as? [[String: Any]] ?? []
            #expect(entries.count == 1 && (entries.first?["seq"] as? Int) == auditHead + 1, "\(tail.output)")
            #expect((entries.first?["reason"] as? String)?.contains(id) == true)
            await cluster.closeConnections()
        }
        /// Point in time: backup B1, 10 persons, backup B2 (the state at its index i, by its
        /// manifest's digest), 10 more persons, leadership moved (the new leader's archiver
        /// goes on from the replicated mark). Restoring B1 with the segments to index i gives
        /// B2's counts and digest exactly; the restored member reads the persons created
        /// after B1 (their subject keys came back from the segments' key streams).
        @Test func aRestoreToAnIndexGivesTheStateTheClusterHadThere() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster(archiveSeconds: 5)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let file = try cluster.writeClusterFile()
            let (_, first) = try Self.createBackup(file)
            try await Self.createPersons(cluster, leader, 20..<30)
            let (second, _) = try Self.createBackup(file)
            let index = try #require(second["applied_index"] as? Int)
            let digest = try #require(second["content_digest"] as? String)
            let other = try #require(cluster.ids.first { $0 != leader && $0 != 4 })
            let moved = try ProcessCluster.tool("crmctl", ["leader", "transfer", "\(other)", "--cluster", file])
            #expect(moved.status == 0, "\(moved.output) \(moved.errors)")
            #expect(await cluster.waitForLeader(among: [other]) == other)
            try await Self.createPersons(cluster, other, 30..<40)
            // Segments past index i, the later ones written by the new leader.
            let archived = await eventually(seconds: 60) {
                let reached = [leader, other].flatMap { LogSegments.list(scratch + "/m\($0)-a") }.map(\.lastIndex).max()
                return (reached ?? 0) > UInt64(index) + 10 && !LogSegments.list(scratch + "/m\(other)-a").isEmpty
            }
            #expect(archived, "no segments past index \(index)")
            await cluster.closeConnections()
            cluster.stopAll()

            let restore =
                [
                    "--config", cluster.configPath(4), "--restore-from", scratch + "/m\(leader)-a/\(first)",
                    "--backup-key", scratch + "/backup.key", "--to-index", "\(index)",
                ] + cluster.ids.flatMap { ["--segments", scratch + "/m\($0)-b"] }
            let restored = try ProcessCluster.tool("crm-node", restore)
            #expect(restored.status == 0, "\(restored.output) \(restored.errors)")
            #expect(restored.output.contains("restored to index \(index),"), "\(restored.output)")
            #expect(restored.output.contains("content digest \(digest)"), "\(restored.output) vs \(digest)")
            print("point-in-time restore: \(restored.output)")

            let persons = try await Self.personsOnRestoredMember(cluster)
            #expect(persons.count == 30)
            let names = Set(persons.compactMap { $0.fields["last_name"]?.text })
            #expect(names.contains("Backed-up 29") && !names.contains("Backed-up 30"))
            await cluster.closeConnections()
        }

        /// `crmctl backup drill`: the newest backup restored into a scratch member on this host,
        /// started, checked (crm check, audit verify, counts) and removed; the result audited and
        /// exported by the leader. A damaged backup fails its drill (exit 1), audited as failed.
        @Test func aDrillRestoresTheNewestBackupIntoAScratchMemberAndChecksIt() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let file = try cluster.writeClusterFile()
            let (info, id) = try Self.createBackup(file)
            let counts = try #require(info["counts"] as? [String: Int])
            let records = counts.filter { !["kv_values", "audit_entries", "subject_keys"].contains($0.key) }.values
                .reduce(0, +)
            let work = scratch + "/drill"
            let drill = ["backup", "drill", "--node-config", cluster.configPath(leader), "--scratch", work]
            let passed = try ProcessCluster.tool("crmctl", drill + ["--cluster", file])
            #expect(passed.status == 0, "\(passed.output) \(passed.errors)")
            #expect(passed.output.contains("backup \(id) passed its restore drill"), "\(passed.output)")
            #expect(records >= 20 && passed.output.contains(" \(records) records"), "\(passed.output)")
            #expect(!FileManager.default.fileExists(atPath: work), "the scratch member was not removed")
            let metrics = await cluster.health(leader).body
            #expect(
                metrics.split(separator: "\n").contains {
                    $0.hasPrefix("crm_backup_drill_last_success_timestamp_seconds ") && !$0.hasSuffix(" 0.0")
                },
                "\(metrics.suffix(1500))")

            // One flipped byte in every copy: the restore's deep verify refuses it.
            for target in ["a", "b"] {
                let chunk = scratch + "/m\(leader)-\(target)/\(id)/data-000000.chunk"
                var bytes = try #require(FileManager.default.contents(atPath: chunk))
                bytes[bytes.count / 2] ^= 0x10
                try bytes.write(to: URL(fileURLWithPath: chunk))
            }
            let failed = try ProcessCluster.tool("crmctl", drill + [id, "--cluster", file])
            #expect(failed.status == 1 && failed.errors.contains("failed its restore drill"), "\(failed.errors)")
            let entries = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "backup.drill", "--json", "--cluster", file])
            let outcomes = (Self.json(entries.output) as? [[String: Any]])?.compactMap { $0["outcome"] as? String }
            #expect(outcomes?.count == 2, "\(entries.output)")
            #expect(Set(outcomes ?? []).count == 2, "one passed, one failed: \(entries.output)")
            await cluster.closeConnections()
        }

        /// `crmctl backup create` with the leader killed (SIGKILL) while it writes the backup
        /// (each chunk file waits 3 s, an injected slow disk; the kill comes once the partial
        /// directory is there): crmctl fails saying so; after the member restarts, every backup
        /// any member lists verifies, the half-written one is not among them, and `backup list`
        /// shows it as interrupted.
        @Test func aBackupCutShortByTheLeadersKillFailsAndIsNeverListed() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let file = try cluster.writeClusterFile()
            let members = cluster.ids.filter { $0 != 4 }
            for member in members { try cluster.setFault(member, \.backupChunkDelayMilliseconds, 3000) }
            let slowed = await eventually(seconds: 10) {
                members.allSatisfy { cluster.log($0).contains("backupChunkDelayMilliseconds: Optional(3000)") }
            }
            #expect(slowed, "the members did not take up their slow backup disks")
            let process = Process()
            process.executableURL = ProcessCluster.binaries.appendingPathComponent("crmctl")
            process.arguments = ["backup", "create", "--json", "--cluster", file]
            let (output, errors) = (Pipe(), Pipe())
            (process.standardOutput, process.standardError) = (output, errors)
            try process.run()
            func writing() -> UInt64? {
                members.first { member in
                    ((try? FileManager.default.contentsOfDirectory(atPath: scratch + "/m\(member)-a")) ?? []).contains {
                        $0.hasPrefix(".partial-")
                    }
                }
            }
            #expect(await eventually(seconds: 10) { writing() != nil }, "the backup never began to write")
            let victim = writing() ?? leader
            cluster.kill9(victim)
            let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let complained = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let created = (Self.json(said) as? [[String: Any]])?.first?["id"] as? String
            #expect(process.terminationStatus != 0 && created == nil && !complained.isEmpty, "\(said) \(complained)")
            print("backup during the leader's kill: exit \(process.terminationStatus), \(complained)")

            for member in members { try cluster.setFault(member, \.backupChunkDelayMilliseconds, nil) }
            try cluster.start(victim)
            #expect(await cluster.waitForLeader() != nil)
            let listed = try ProcessCluster.tool("crmctl", ["backup", "list", "--json", "--cluster", file])
            let ids = Set((Self.json(listed.output) as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
            let table = try ProcessCluster.tool("crmctl", ["backup", "list", "--cluster", file])
            #expect(table.output.contains("interrupted (never usable, safe to remove)"), "\(table.output)")
            for id in ids {
                let verify = try ProcessCluster.tool(
                    "crmctl", ["backup", "verify", id, "--deep", "--cluster", file])
                #expect(verify.status == 0, "listed backup \(id) does not hold: \(verify.errors)")
            }
            // The half-written backup stays a partial directory, never listed.
            let victimFirst = (try? FileManager.default.contentsOfDirectory(atPath: scratch + "/m\(victim)-a")) ?? []
            let partial = victimFirst.filter { $0.hasPrefix(".partial-") }
            #expect(partial.count == 1, "\(victimFirst)")
            #expect(partial.allSatisfy { !ids.contains(String($0.dropFirst(".partial-".count))) })
            // Whatever is on disk and not listed is a partial directory, never a backup id.
            for target in ["a", "b"] {
                let names =
                    (try? FileManager.default.contentsOfDirectory(atPath: scratch + "/m\(victim)-\(target)")) ?? []
                for name in names where name != LogSegments.directoryName && !name.hasPrefix(".partial-") {
                    #expect(ids.contains(name), "\(name) is on disk but not a listed backup")
                }
            }
            await cluster.closeConnections()
        }

        @Test func theLeaderTakesScheduledBackupsItself() async throws {
            let (cluster, scratch, leader) = try await Self.backedUpCluster(everyHours: 6)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            // No backup yet: the leader's schedule takes one within its first minute.
            let taken = await eventually(seconds: 40) {
                FileManager.default.fileExists(atPath: scratch + "/m\(leader)-b")
                    && !BackupsOnDisk.ids(in: scratch + "/m\(leader)-b").isEmpty
            }
            #expect(taken, "the leader took no scheduled backup")
            for member in cluster.ids where member != leader {
                #expect(BackupsOnDisk.ids(in: scratch + "/m\(member)-a").isEmpty, "follower \(member) took one")
            }
            let file = try cluster.writeClusterFile()
            let entries = try ProcessCluster.tool(
                "crmctl", ["audit", "query", "--action", "backup.create", "--json", "--cluster", file])
            let actors = (Self.json(entries.output) as? [[String: Any]])?.compactMap { $0["actor"] as? String }
            #expect(actors == ["crm://member/\(leader)"], "\(entries.output)")
            let metrics = await cluster.health(leader).body
            #expect(
                metrics.split(separator: "\n").contains {
                    $0.hasPrefix("crm_backup_last_success_timestamp_seconds ") && !$0.hasSuffix(" 0.0")
                },
                "\(metrics.suffix(1500))")
            #expect(!(await cluster.alarms(leader)).contains(.backupStale))
            await cluster.closeConnections()
        }
    }
}

/// Backup directories in a target (32 hexadecimal characters each).
enum BackupsOnDisk {
    static func ids(in target: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []).filter {
            $0.utf8.count == 32 && $0.allSatisfy(\.isHexDigit)
        }
    }
}
