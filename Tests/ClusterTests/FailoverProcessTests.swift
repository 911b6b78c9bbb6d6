import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import FaultFile
import Foundation
import GRPCCore
import Synchronization
import Testing

/// Failover through the front on real processes: killed, paused and failing members, full
/// disks (through the debug build's fault hook), and a node whose own member is down.
extension RealProcessTests {
    @Suite struct FailoverProcessTests {
        /// How many kill and pause rounds to run (CRM_FAILOVER_ROUNDS; 2 in CI, 10 for the figures).
        static let rounds = Int(ProcessInfo.processInfo.environment["CRM_FAILOVER_ROUNDS"] ?? "") ?? 2

        /// crm-bench through `front`'s front, while `fault` runs at `faultAfter` seconds; returns the
        /// longest time without a successful write, and the errors the bench saw.
        static func benchThroughFront(
            _ cluster: ProcessCluster, front: UInt64, seconds: Double, faultAfter: Double,
            fault: @escaping @Sendable () async throws -> Void
        ) async throws -> (gap: Double, errors: [String: Int], operations: Int) {
            let file = try cluster.writeClusterFile()
            async let bench = Task.detached {
                try ProcessCluster.tool(
                    "crm-bench",
                    [
                        "kv", "--cluster", file, "--front", "--member", "\(front)", "--clients", "16",
                        "--duration", "\(seconds)", "--warmup", "0.5", "--op", "put", "--keys", "500", "--json",
                    ])
            }.value
            try await Task.sleep(for: .seconds(0.5 + faultAfter))
            try await fault()
            let (status, output, errors) = try await bench
            try #require(status == 0, "crm-bench failed: \(errors)")
            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
            let gap = (json["longest_gap_ms"] as? Double ?? .infinity) / 1000
            return (gap, json["errors"] as? [String: Int] ?? [:], json["operations"] as? Int ?? 0)
        }

        static func summary(_ gaps: [Double]) -> String {
            let sorted = gaps.sorted()
            return String(
                format: "median %.3f s, max %.3f s over %d runs: ", sorted[sorted.count / 2], sorted.last!, sorted.count
            )
                + gaps.map { String(format: "%.3f", $0) }.joined(separator: ", ")
        }

        /// kill -9 of the leader under load through a follower's front: writes resume within 2 s and
        /// no request fails (the front retries every write safely, in its own sessions).
        @Test func killingTheLeaderUnderLoadPausesWritesThroughTheFrontBriefly() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            var gaps: [Double] = []
            for round in 1...Self.rounds {
                let leader = try #require(await cluster.waitForLeader())
                let front = cluster.ids.first { $0 != leader }!
                let run = try await Self.benchThroughFront(cluster, front: front, seconds: 4, faultAfter: 1.5) {
                    cluster.kill9(leader)
                }
                print(
                    String(
                        format:
                            "front leader-kill round %d: member %llu killed, writes through front %llu paused %.3f s (%d writes, errors %@)",
                        round, leader, front, run.gap, run.operations, "\(run.errors)"))
                gaps.append(run.gap)
                #expect(run.gap < 2.0, "round \(round): writes through the front paused \(run.gap) s")
                #expect(run.errors.isEmpty, "round \(round): the front let errors through: \(run.errors)")
                try cluster.start(leader)
                #expect(await eventually(seconds: 15) { await cluster.converged() })
            }
            print("front leader-kill gaps: " + Self.summary(gaps))
            await cluster.closeConnections()
        }

        /// SIGSTOP of the leader: another member takes over as fast as after a kill; on SIGCONT the
        /// old leader steps down, and a linearizable read it answers is never stale.
        @Test func aPausedLeaderIsReplacedAndStepsDownWithoutAStaleRead() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            var gaps: [Double] = []
            for round in 1...Self.rounds {
                let leader = try #require(await cluster.waitForLeader())
                try await cluster.put("paused/marker", "before \(round)", via: leader)
                let front = cluster.ids.first { $0 != leader }!
                let pid = cluster.pid(leader)!
                let run = try await Self.benchThroughFront(cluster, front: front, seconds: 4, faultAfter: 1.5) {
                    kill(pid, SIGSTOP)
                }
                gaps.append(run.gap)
                // Written while the old leader sleeps, through a front on a live node.
                var put = Crm_V1_PutRequest()
                put.key = Data("paused/marker".utf8)
                put.value = Data("after \(round)".utf8)
                _ = try await cluster.frontConnection(front).kv.put(put, options: ProcessCluster.shortCall)
                kill(pid, SIGCONT)
                // At once, on the old leader itself: the new value, or an error; never the old one.
                do {
                    let read = try await cluster.get("paused/marker", via: leader)
                    #expect(
                        read == "after \(round)",
                        "round \(round): the resumed leader served a stale read: \(read ?? "nil")")
                } catch {
                    print("round \(round): the resumed leader refused the read: \(error)")
                }
                #expect(
                    await eventually(seconds: 5) { await cluster.status(leader).map { $0.role != .leader } ?? false },
                    "round \(round): the resumed old leader did not step down")
                print(
                    String(
                        format:
                            "front leader-pause round %d: member %llu paused, writes through front %llu paused %.3f s (errors %@)",
                        round, leader, front, run.gap, "\(run.errors)"))
                #expect(run.gap < 2.0, "round \(round): writes through the front paused \(run.gap) s")
                #expect(run.errors.isEmpty, "round \(round): \(run.errors)")
                #expect(await eventually(seconds: 15) { await cluster.converged() })
            }
            print("front leader-pause gaps: " + Self.summary(gaps))
            await cluster.closeConnections()
        }

        /// A follower whose disk syncs slowly reports itself degraded; fronts take it out of read
        /// routing, and put it back when the disk recovers.
        @Test func aFollowerWithASlowDiskIsEjectedFromReadRoutingAndReadmitted() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let slow = cluster.ids.first { $0 != leader }!
            func readable(_ member: UInt64, on front: UInt64) async -> Bool? {
                guard let reply = try? await cluster.frontHTTP(front, "GET", "/v1/cluster") else { return nil }
                let members = FrontProcessTests.json(reply.text)["members"] as? [[String: Any]] ?? []
                return members.first { $0["id"] as? Int == Int(member) }?["readable"] as? Bool
            }
            try #require(
                await eventually(seconds: 10) { await readable(slow, on: leader) == true },
                "the member is never readable at all")
            try cluster.setFault(slow, \.fsyncDelayMilliseconds, 300)
            try #require(
                await eventually(seconds: 10) { await readable(slow, on: leader) == false },
                "the slow member was not ejected")
            #expect(await cluster.health(leader).body.contains("crm_front_member_routable{member=\"\(slow)\"} 0.0"))
            let reason = try await cluster.frontHTTP(leader, "GET", "/v1/cluster").text
            #expect(reason.contains("disk is failing"), "\(reason)")
            var get = Crm_V1_GetRequest()
            get.key = Data("anything".utf8)
            for _ in 0..<40 {
                let response = try await cluster.frontConnection(leader).kv.get(get, options: ProcessCluster.shortCall)
                #expect(response.header.memberID != slow, "a read went to the ejected member")
            }
            try cluster.clearFaults(slow)
            #expect(
                await eventually(seconds: 10) { await readable(slow, on: leader) == true },
                "the recovered member was not re-admitted")
            await cluster.closeConnections()
        }

        /// A leader whose disk is failing hands leadership to a healthy voter; writes go on.
        @Test func aLeaderWithAFailingDiskHandsLeadershipOver() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = cluster.ids.first { $0 != leader }!
            try cluster.setFault(leader, \.fsyncDelayMilliseconds, 400)
            var put = Crm_V1_PutRequest()
            put.key = Data("disk".utf8)
            let moved = await eventually(seconds: 15) {
                put.value = Data("\(Date())".utf8)
                _ = try? await cluster.frontConnection(front).kv.put(put, options: ProcessCluster.shortCall)
                let now = await cluster.status(front)?.leaderID ?? 0
                return now != 0 && now != leader
            }
            try #require(moved, "leadership stayed on the member with the failing disk")
            let newLeader = try #require(await cluster.status(front)?.leaderID)
            print("failing-disk leader \(leader) handed over to \(newLeader)")
            #expect(
                cluster.log(leader).contains("leader is unfit; handing leadership over")
                    || cluster.log(leader).contains("raft role"),
                "the old leader's log says why it let go")
            for index in 0..<5 {
                put.value = Data("after \(index)".utf8)
                _ = try await cluster.frontConnection(front).kv.put(put, options: ProcessCluster.shortCall)
            }
            try cluster.clearFaults(leader)
            #expect(await eventually(seconds: 15) { await cluster.converged() })
            await cluster.closeConnections()
        }

        /// Full disks raise NOSPACE: writes that add data are refused with a clear error, reads and
        /// deletes still work; the alarm shows everywhere and clears when space returns.
        @Test func theNospaceAlarmRefusesWritesAndClears() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            try await cluster.put("kept", "before", via: leader)
            for id in cluster.ids { try cluster.setFault(id, \.freeDiskBytes, 0) }
            let file = try cluster.writeClusterFile()
            try #require(
                await eventually(seconds: 5) {
                    (try? ProcessCluster.tool("crmctl", ["alarms", "--cluster", file]))?.output.components(
                        separatedBy: "NOSPACE"
                    ).count == 4
                }, "every member raises NOSPACE")
            let alarms = try ProcessCluster.tool("crmctl", ["alarms", "--cluster", file])
            #expect(alarms.status == 1, "crmctl alarms exits 1 while alarms are raised")
            #expect(alarms.output.contains("below the reserve"), "\(alarms.output)")

            let refused = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/put",
                json: #"{"key": "\#(FrontProcessTests.base64("new"))", "value": "\#(FrontProcessTests.base64("x"))"}"#)
            #expect(refused.status == 507, "\(refused.text)")
            #expect(refused.text.contains("NOSPACE") && refused.text.contains("RESOURCE_EXHAUSTED"), "\(refused.text)")
            var put = Crm_V1_PutRequest()
            put.key = Data("new".utf8)
            put.value = Data("x".utf8)
            await #expect(throws: RPCError.self) {
                _ = try await cluster.frontConnection(leader).kv.put(put, options: ProcessCluster.shortCall)
            }
            #expect(try await cluster.get("kept", via: leader) == "before", "reads are served")
            let deleted = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/delete", json: #"{"key": "\#(FrontProcessTests.base64("kept"))"}"#)
            #expect(deleted.status == 200, "deletes free space and are allowed: \(deleted.text)")
            #expect(await cluster.health(leader, "/readyz").body.contains("alarm NOSPACE"))
            #expect(await cluster.health(leader).body.contains("crm_alarm_active{alarm=\"NOSPACE\"} 1.0"))
            let status = try ProcessCluster.tool("crmctl", ["status", "--cluster", file])
            #expect(status.output.contains("ALARM NOSPACE"), "\(status.output)")

            for id in cluster.ids { try cluster.clearFaults(id) }
            #expect(
                await eventually(seconds: 5) {
                    (try? ProcessCluster.tool("crmctl", ["alarms", "--cluster", file]))?.status == 0
                }, "the alarms clear")
            let accepted = try await cluster.frontHTTP(
                leader, "POST", "/v1/kv/put",
                json: #"{"key": "\#(FrontProcessTests.base64("new"))", "value": "\#(FrontProcessTests.base64("x"))"}"#)
            #expect(accepted.status == 200, "\(accepted.text)")
            #expect(await cluster.health(leader).body.contains("crm_alarm_active{alarm=\"NOSPACE\"} 0.0"))
            #expect(await eventually(seconds: 10) { await cluster.converged() })
            await cluster.closeConnections()
        }

        /// A node whose own member failed (its disk cannot sync) keeps serving through its front:
        /// writes and both kinds of reads go to the other members.
        @Test func aFrontKeepsServingWhenItsOwnMemberIsDown() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let broken = cluster.ids.first { $0 != leader }!
            try cluster.setFault(broken, \.fsyncFails, true)
            try await Task.sleep(for: .milliseconds(400))
            for index in 0..<5 { try await cluster.put("load", "\(index)", via: leader) }
            try #require(
                await eventually(seconds: 10) { await cluster.health(broken, "/livez").status == 503 },
                "the member's storage did not fail")
            #expect(await cluster.health(broken, "/livez").body.contains("storage failed"))

            var put = Crm_V1_PutRequest()
            put.key = Data("via-broken-node".utf8)
            put.value = Data("still served".utf8)
            let written = try await cluster.frontConnection(broken).kv.put(put, options: ProcessCluster.shortCall)
            #expect(written.header.memberID == leader)
            for consistency in [Crm_V1_ReadConsistency.linearizable, .serializable] {
                var get = Crm_V1_GetRequest()
                get.key = put.key
                get.consistency = consistency
                let read = try #require(
                    await eventually(seconds: 5) {
                        (try? await cluster.frontConnection(broken).kv.get(get, options: ProcessCluster.shortCall)).map
                        { $0.found } ?? false
                    } ? try await cluster.frontConnection(broken).kv.get(get, options: ProcessCluster.shortCall) : nil)
                #expect(
                    read.value == put.value && read.header.memberID != broken,
                    "\(consistency) read served by member \(read.header.memberID)")
            }
            let view = try await cluster.frontHTTP(broken, "GET", "/v1/cluster")
            let own = (FrontProcessTests.json(view.text)["members"] as? [[String: Any]])?.first {
                $0["id"] as? Int == Int(broken)
            }
            #expect(own?["readable"] as? Bool == false, "\(view.text)")
            await cluster.closeConnections()
        }
    }
}

extension RealProcessTests {
    /// Members that stay down, replacement, draining, and clients with several fronts.
    @Suite struct MemberLossProcessTests {
        /// A member silent past `failover.dead_after_seconds` is reported dead with the commands that
        /// replace it; with `auto_replace` and a running spare, the leader replaces it itself.
        @Test func aDeadMemberIsReportedAndReplacedByTheSpare() async throws {
            let cluster = try ProcessCluster(ids: [1, 2, 3], spares: [4], deadAfterSeconds: 2, autoReplace: true)
            try cluster.startAll()
            try cluster.start(4)
            let leader = try #require(await cluster.waitForLeader())
            for index in 0..<50 { try await cluster.put("before-\(index)", "v", via: leader) }
            let dead = cluster.ids.first { $0 != leader }!
            cluster.kill9(dead)
            let file = try cluster.writeClusterFile()
            // The report that names the spare is kept: once the leader starts replacing on its own,
            // the spare is taken and later reports fall back to the generic commands.
            let report = Mutex("")
            let reported = await eventually(seconds: 10) {
                let status = (try? ProcessCluster.tool("crmctl", ["status", "--cluster", file]))?.output ?? ""
                report.withLock { $0 = status }
                return status.contains("member \(dead) is dead") && status.contains("crmctl members promote 4")
            }
            let status = report.withLock { $0 }
            #expect(reported, "crmctl status does not report member \(dead) dead with its replacement: \(status)")
            #expect(
                status.contains("crmctl members add-learner 4 --peer 127.0.0.1:\(cluster.addresses(4).peer.port)"),
                "\(status)")
            let replaced = await eventually(seconds: 30) {
                guard let members = await cluster.status(leader)?.members else { return false }
                let voters = Set(members.filter(\.voter).map(\.id))
                return voters == Set(cluster.ids.filter { $0 != dead } + [4])
            }
            let members =
                await cluster.status(leader)?.members.map { "\($0.id)\($0.voter ? " voter" : " learner")" } ?? []
            #expect(replaced, "the spare did not replace the dead voter: \(members)")
            #expect(cluster.log(leader).contains("automatic replacement"), "the leader's log says what it did")
            try await cluster.put("after", "replaced", via: leader)
            #expect(
                await eventually(seconds: 10) {
                    (try? await cluster.get("after", via: 4, serializable: true)) == "replaced"
                })
            await cluster.closeConnections()
        }

        /// SIGTERM on a node drains its front: a request in progress completes, then the front closes.
        @Test func aFrontDrainsOnShutdown() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let draining = cluster.ids.first { $0 != leader }!
            // Slow the leader's disk so that a write takes a while; the handoff it causes is fine.
            try cluster.setFault(leader, \.fsyncDelayMilliseconds, 300)
            try await Task.sleep(for: .milliseconds(400))
            let connection = try cluster.frontConnection(draining)
            var put = Crm_V1_PutRequest()
            put.key = Data("drained".utf8)
            put.value = Data("completed".utf8)
            let sent = put
            async let answered = connection.kv.put(sent, options: ProcessCluster.shortCall)
            try await Task.sleep(for: .milliseconds(50))
            let pid = cluster.pid(draining)!
            kill(pid, SIGTERM)
            let response = try await answered
            // Usually answered by the draining node's own member, which forwarded the write and
            // applied it (or by the leader over gRPC, when that member did not know the leader).
            #expect(response.header.leaderID != 0, "answered after the write committed, through the draining front")
            _ = cluster.waitUntilExit(draining)
            #expect(cluster.log(draining).contains("front drained"), "the node's log shows the drain")
            try cluster.clearFaults(leader)
            let reader = cluster.ids.first { $0 != draining }!
            #expect(try await cluster.get("drained", via: reader) == "completed")
            await cluster.closeConnections()
        }

        /// A client with every front keeps working when the node of the front it uses goes down.
        @Test func aClientWithSeveralFrontsMovesOnWhenOneIsDown() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            _ = try #require(await cluster.waitForLeader())
            let pool = try FrontPool(
                cluster.ids.map { Endpoint(host: "127.0.0.1", port: cluster.addresses($0).front.port) },
                tls: cluster.tls("app"))
            var put = Crm_V1_PutRequest()
            put.key = Data("pool".utf8)
            put.value = Data("one".utf8)
            _ = try await pool.put(put, options: ProcessCluster.shortCall)
            let used = try #require(cluster.ids.first { cluster.addresses($0).front.port == pool.currentEndpoint.port })
            cluster.kill9(used)
            var get = Crm_V1_GetRequest()
            get.key = put.key
            let read = try #require(
                await eventually(seconds: 10) {
                    (try? await pool.get(get, options: ProcessCluster.shortCall))?.value == put.value
                } ? true : nil, "reads did not move to another front")
            #expect(read)
            #expect(pool.currentEndpoint.port != cluster.addresses(used).front.port)
            await pool.close()
            await cluster.closeConnections()
        }
    }
}

extension RealProcessTests {
    /// Alarms raised on one member: the cluster routes around it.
    @Suite struct AlarmProcessTests {
        /// A leader whose disk fills hands leadership to a member with space; writes go on.
        @Test func aLeaderOutOfSpaceHandsLeadershipOver() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = cluster.ids.first { $0 != leader }!
            try cluster.setFault(leader, \.freeDiskBytes, 1024)
            let moved = await eventually(seconds: 10) {
                let now = await cluster.status(front)?.leaderID ?? 0
                return now != 0 && now != leader
            }
            #expect(moved, "leadership stayed on the member without space")
            var put = Crm_V1_PutRequest()
            put.key = Data("space".utf8)
            put.value = Data("written after the handoff".utf8)
            let written = try await cluster.frontConnection(front).kv.put(put, options: ProcessCluster.shortCall)
            #expect(written.header.memberID != leader)
            #expect(cluster.log(leader).contains("NOSPACE alarm raised"))
            try cluster.clearFaults(leader)
            #expect(await eventually(seconds: 10) { await cluster.converged() })
            await cluster.closeConnections()
        }

        /// Bytes flipped in a stored file: the integrity check at start finds the damage, the member
        /// raises CORRUPT and serves no data, and its front keeps serving from the others.
        @Test func aMemberWithDamagedFilesRaisesCorruptAndServesNoData() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let value = String(repeating: "customer record ", count: 128)
            for index in 0..<200 { try await cluster.put("contact/\(1000 + index)", value, via: leader) }
            let damaged = cluster.ids.first { $0 != leader }!
            #expect(await eventually(seconds: 10) { await cluster.converged() })
            _ = try await cluster.connection(damaged, admin: true).admin.compact(Crm_V1_CompactRequest())
            cluster.terminate(damaged)

            // The state machine's table file names its column family; flip bytes in its first data block.
            let db = cluster.directory + "/node-\(damaged)/data/db"
            let tables = try FileManager.default.contentsOfDirectory(atPath: db).filter { $0.hasSuffix(".sst") }
            let table = try #require(
                tables.first { name in
                    (FileManager.default.contents(atPath: db + "/" + name) ?? Data()).range(
                        of: Data("state_machine".utf8)) != nil
                }, "no table file of the state machine among \(tables)")
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: db + "/" + table))
            try handle.seek(toOffset: 300)
            var bytes = try #require(try handle.read(upToCount: 32))
            for index in bytes.indices { bytes[index] ^= 0xFF }
            try handle.seek(toOffset: 300)
            try handle.write(contentsOf: bytes)
            try handle.close()

            try cluster.start(damaged)
            let file = try cluster.writeClusterFile()
            let raised = await eventually(seconds: 20) {
                (try? ProcessCluster.tool("crmctl", ["alarms", "--cluster", file]))?.output.contains("CORRUPT") == true
            }
            let alarms = try ProcessCluster.tool("crmctl", ["alarms", "--cluster", file])
            #expect(
                raised && alarms.status == 1, "\(alarms.output) \(alarms.errors) \(cluster.log(damaged).suffix(2000))")
            #expect(await cluster.health(damaged, "/readyz").body.contains("CORRUPT"))
            do {
                _ = try await cluster.get("contact/1000", via: damaged, serializable: true)
                Issue.record("the damaged member served a read")
            } catch let error as RPCError {
                #expect(error.code == .dataLoss && error.message.contains("serves no data"), "\(error)")
            }
            var get = Crm_V1_GetRequest()
            get.key = Data("contact/1000".utf8)
            get.consistency = .serializable
            let read = try await cluster.frontConnection(damaged).kv.get(get, options: ProcessCluster.shortCall)
            #expect(read.found && read.header.memberID != damaged, "the damaged node's front reads from another member")
            await cluster.closeConnections()
        }
    }
}
