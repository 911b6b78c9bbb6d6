import CRMClient
import CRMProto
import CRMTestSupport
import ClusterHarness
import Foundation
import GRPCCore
import NIOCore
import NIOPosix
import Testing
import Wire

/// Three real `crm-node` processes: real TLS, real RocksDB, loopback.
extension RealProcessTests {
    @Suite struct ClusterProcessTests {
        @Test func writesThroughAnyMemberAreReadBackFromEveryMember() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            #expect(await cluster.waitForLeader() != nil)
            for (position, id) in cluster.ids.enumerated() {
                try await cluster.put("key-\(id)", "written via \(id) #\(position)", via: id)
            }
            // Health: every member is live and ready, and its metrics carry the Raft positions.
            for id in cluster.ids {
                #expect(await cluster.health(id, "/livez") == (200, "live\n"))
                #expect(await cluster.health(id, "/readyz").status == 200)
                let metrics = await cluster.health(id).body
                for name in [
                    "crm_raft_role", "crm_raft_term", "crm_raft_commit_index", "crm_raft_applied_index",
                    "crm_proposal_duration_seconds_bucket",
                    "crm_apply_duration_seconds_bucket", "crm_fsync_duration_seconds_bucket",
                    "crm_peer_round_trip_seconds",
                    "crm_snapshots_sent_total", "crm_tls_peer_connections_refused_total",
                ] {
                    #expect(metrics.contains(name), "member \(id) metrics lack \(name)")
                }
            }
            for reader in cluster.ids {
                for writer in cluster.ids {
                    #expect(
                        try await cluster.get("key-\(writer)", via: reader) == "written via \(writer) #\(writer - 1)",
                        "read on \(reader)")
                }
            }
            try await expectConverged(cluster)
            await cluster.closeConnections()
        }

        /// kill -9 of the leader: another member leads and takes writes within 2 s; the killed
        /// member restarts from its data and catches up. Run three times; the gaps are printed.
        @Test func killingTheLeaderHandsOverWithinTwoSecondsAndTheKilledMemberCatchesUp() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            var gaps: [Double] = []
            for round in 1...3 {
                guard let leader = await cluster.waitForLeader() else {
                    Issue.record("no leader before round \(round)")
                    return
                }
                try await cluster.put("round", "\(round) before", via: leader)
                let survivors = cluster.ids.filter { $0 != leader }
                cluster.kill9(leader)
                let killed = Date()
                // Writes are attempted through a survivor until one is acknowledged.
                var acknowledged: Date?
                while Date().timeIntervalSince(killed) < 10 {
                    do {
                        try await cluster.put("round", "\(round) after", via: survivors[0])
                        acknowledged = Date()
                        break
                    } catch {
                        try await Task.sleep(nanoseconds: 20_000_000)
                    }
                }
                let gap = try #require(acknowledged).timeIntervalSince(killed)
                gaps.append(gap)
                print(
                    String(
                        format: "leader kill round %d: member %llu killed; first acknowledged write after %.3f s",
                        round, leader, gap))
                #expect(gap < 2.0, "round \(round): writes resumed after \(gap) s")
                try cluster.start(leader)
                #expect(await cluster.waitForLeader() != nil)
                #expect(try await cluster.get("round", via: leader) == "\(round) after")
            }
            print("leader kill gaps: " + gaps.map { String(format: "%.3f s", $0) }.joined(separator: ", "))
            try await expectConverged(cluster)
            await cluster.closeConnections()
        }

        /// A follower that is down while the log is compacted comes back and is sent a snapshot.
        @Test func aFollowerThatMissedACompactionCatchesUpBySnapshot() async throws {
            let cluster = try ProcessCluster(snapshotEvery: 100)
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let follower = cluster.ids.first { $0 != leader }!
            cluster.kill9(follower)
            for index in 0..<300 { try await cluster.put("bulk-\(index % 50)", "value \(index)", via: leader) }
            let status = try #require(await cluster.status(leader))
            #expect(status.snapshotIndex >= 200, "the leader compacted its log (snapshot at \(status.snapshotIndex))")
            try cluster.start(follower)
            #expect(
                await eventually(seconds: 15) {
                    (await cluster.status(follower))?.appliedIndex ?? 0 >= status.appliedIndex
                })
            #expect(await cluster.health(follower).body.contains("crm_snapshots_installed_total 1.0"))
            let ready = await cluster.health(follower, "/readyz")
            #expect(ready.status == 200 && ready.body.hasPrefix("ready"))
            #expect(try await cluster.get("bulk-49", via: follower, serializable: true) == "value 299")
            try await expectConverged(cluster)
            await cluster.closeConnections()
        }

        /// The log keeps only a snapshot's metadata; the state at its index is pinned in memory.
        /// After a restart nothing is pinned and the state has moved past the snapshot: the
        /// leader compacts again when a follower needs one, and sends that.
        @Test func aRestartedLeaderSendsASnapshotOfItsStateAsItIsNow() async throws {
            let cluster = try ProcessCluster(snapshotEvery: 100)
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let follower = cluster.ids.first { $0 != leader }!
            let others = cluster.ids.filter { $0 != follower }
            cluster.kill9(follower)
            for index in 0..<250 { try await cluster.put("bulk-\(index % 50)", "value \(index)", via: leader) }
            for id in others { cluster.terminate(id) }
            for id in others { try cluster.start(id) }
            let newLeader = try #require(await cluster.waitForLeader(among: others))
            let before = try #require(await cluster.status(newLeader))
            #expect(
                before.snapshotIndex >= 200, "the log was compacted before the restart (at \(before.snapshotIndex))")
            for index in 0..<20 { try await cluster.put("late-\(index)", "value \(index)", via: newLeader) }
            try cluster.start(follower)
            let target = try #require(await cluster.status(newLeader)).appliedIndex
            #expect(
                await eventually(seconds: 15) {
                    (await cluster.status(follower))?.appliedIndex ?? 0 >= target
                })
            #expect(await cluster.health(follower).body.contains("crm_snapshots_installed_total 1.0"))
            let after = try #require(await cluster.status(newLeader))
            #expect(after.snapshotIndex > before.snapshotIndex, "the leader compacted again to serve the follower")
            #expect(try await cluster.get("late-19", via: follower, serializable: true) == "value 19")
            try await expectConverged(cluster)
            await cluster.closeConnections()
        }

        /// A write retried (same session, same number) on the new leader after the old one was
        /// killed is answered once and applied once: a compare-and-swap from absent would fail if
        /// it applied twice.
        @Test func aRetriedWriteAfterALeaderKillIsAppliedOnce() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let opened = try await cluster.connection(leader).kv.openSession(
                Crm_V1_OpenSessionRequest(), options: ProcessCluster.shortCall)
            var request = Crm_V1_CompareAndSwapRequest()
            request.key = Data("once".utf8)
            request.expectAbsent = true
            request.newValue = Data("applied".utf8)
            request.session.sessionID = opened.sessionID
            request.session.sequence = 1
            let first = try await cluster.connection(leader).kv.compareAndSwap(
                request, options: ProcessCluster.shortCall)
            #expect(first.swapped)
            cluster.kill9(leader)
            let survivor = cluster.ids.first { $0 != leader }!
            var retried: Crm_V1_CompareAndSwapResponse?
            #expect(
                await eventually(seconds: 10) {
                    retried = try? await cluster.connection(survivor).kv.compareAndSwap(
                        request, options: ProcessCluster.shortCall)
                    return retried != nil
                })
            #expect(retried?.swapped == true, "the retry was answered from the session")
            // Without the session the same compare-and-swap does not swap: the value is there once.
            var blind = request
            blind.clearSession()
            #expect(
                try await cluster.connection(survivor).kv.compareAndSwap(blind, options: ProcessCluster.shortCall)
                    .swapped == false)
            #expect(try await cluster.get("once", via: survivor) == "applied")
            await cluster.closeConnections()
        }

        /// A client certificate from another CA is refused; a peer with another member's
        /// certificate is refused; garbage, a truncated and an oversized message each close only
        /// their own connection while the cluster keeps serving.
        @Test func strangersAndBadInputAreRefusedWithoutHarm() async throws {
            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let target = cluster.ids.first { $0 != leader }!
            let ports = cluster.ports(target)

            let strangers = NSTemporaryDirectory() + "crm-strangers-" + UUID().uuidString
            defer { for path in [strangers, strangers + ".ca"] { try? FileManager.default.removeItem(atPath: path) } }
            try Programs.run(
                "/bin/bash",
                [
                    ProcessCluster.repository.appendingPathComponent("cluster/make-certs.sh").path, strangers, "9",
                    "crmctl",
                ])
            let foreign = try MemberConnection(
                host: "127.0.0.1", port: ports.client,
                tls: ClientTLSFiles(
                    ca: cluster.directory + "/certs/ca.pem", certificate: strangers + "/client-crmctl.pem",
                    privateKey: strangers + "/client-crmctl.key"))
            var get = Crm_V1_GetRequest()
            get.key = Data("anything".utf8)
            await #expect(throws: (any Error).self) { try await foreign.kv.get(get, options: ProcessCluster.shortCall) }
            await foreign.close()

            // A client without admin rights on the admin API.
            let app = try MemberConnection(host: "127.0.0.1", port: ports.admin, tls: cluster.tls("app"))
            do {
                _ = try await app.admin.status(Crm_V1_StatusRequest(), options: ProcessCluster.shortCall)
                Issue.record("a non-admin client read the admin status")
            } catch let error as RPCError {
                #expect(error.code == .permissionDenied)
            }
            await app.close()

            let certs = cluster.directory + "/certs"
            func member(_ id: Int) -> (ca: String, certificate: String, key: String) {
                (certs + "/ca.pem", certs + "/member-\(id).pem", certs + "/member-\(id).key")
            }
            let impostor = try await RawConnection(port: ports.peer, tls: member(Int(leader)))
            let otherID = cluster.ids.first { $0 != leader && $0 != target }!
            try await impostor.write(
                Frame(
                    type: .hello, payload: (0..<8).map { UInt8(truncatingIfNeeded: otherID >> (56 - 8 * UInt64($0))) }
                ).encoded)
            #expect(await eventually(seconds: 3) { impostor.isClosed })

            let garbage = try await RawConnection(port: ports.peer, tls: member(Int(otherID)))
            try await garbage.write(Array(repeating: 0x41, count: 64))
            #expect(await eventually(seconds: 3) { garbage.isClosed })

            let oversized = try await RawConnection(port: ports.peer, tls: member(Int(otherID)))
            let hello = Frame(
                type: .hello, payload: (0..<8).map { UInt8(truncatingIfNeeded: otherID >> (56 - 8 * UInt64($0))) }
            ).encoded
            try await oversized.write(hello + FrameHeader(type: .raftMessages, payloadBytes: UInt32.max).encoded)
            #expect(await eventually(seconds: 3) { oversized.isClosed })

            let truncated = try await RawConnection(port: ports.peer, tls: member(Int(otherID)))
            try await truncated.write(hello + FrameHeader(type: .raftMessages, payloadBytes: 1000).encoded + [1, 2, 3])
            await truncated.close()

            let plainGRPC = try await RawConnection(port: ports.client, tls: nil)
            try? await plainGRPC.write(
                Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + Array(repeating: 0xFF, count: 100))
            #expect(await eventually(seconds: 3) { plainGRPC.isClosed })

            let log = cluster.log(target)
            #expect(log.contains("hello claims member \(otherID) but the certificate names crm://member/\(leader)"))
            #expect(log.contains("not a crm frame"))
            #expect(log.contains("exceeds the limit of"))

            // The cluster still serves, through the member that saw all of it.
            try await cluster.put("still", "serving", via: target)
            #expect(try await cluster.get("still", via: leader) == "serving")
            try await expectConverged(cluster)
            await cluster.closeConnections()
        }

        /// The CA bundle is re-read without a restart: a client whose certificate another CA
        /// signed is refused, then accepted once that CA is added to the bundle.
        @Test func theCABundleIsReReadWithoutARestart() async throws {
            let cluster = try ProcessCluster(tlsReloadSeconds: 1)
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let strangers = NSTemporaryDirectory() + "crm-second-ca-" + UUID().uuidString
            defer { for path in [strangers, strangers + ".ca"] { try? FileManager.default.removeItem(atPath: path) } }
            try Programs.run(
                "/bin/bash",
                [
                    ProcessCluster.repository.appendingPathComponent("cluster/make-certs.sh").path, strangers, "9",
                    "crmctl",
                ])
            let bundle = cluster.directory + "/certs/ca.pem"
            // The client trusts both CAs, so that only the member's side decides.
            let clientBundle = strangers + "/both.pem"
            try
                (String(contentsOfFile: bundle, encoding: .utf8)
                + String(contentsOfFile: strangers + "/ca.pem", encoding: .utf8))
                .write(toFile: clientBundle, atomically: true, encoding: .utf8)
            let tls = ClientTLSFiles(
                ca: clientBundle, certificate: strangers + "/client-crmctl.pem",
                privateKey: strangers + "/client-crmctl.key")
            var get = Crm_V1_GetRequest()
            get.key = Data("k".utf8)
            get.consistency = .serializable
            let before = try MemberConnection(host: "127.0.0.1", port: cluster.addresses(leader).client.port, tls: tls)
            await #expect(throws: (any Error).self) { try await before.kv.get(get, options: ProcessCluster.shortCall) }
            await before.close()

            try String(contentsOfFile: clientBundle, encoding: .utf8).write(
                toFile: bundle, atomically: true, encoding: .utf8)
            let accepted = await eventually(seconds: 10) {
                guard
                    let connection = try? MemberConnection(
                        host: "127.0.0.1", port: cluster.addresses(leader).client.port, tls: tls)
                else { return false }
                defer { Task { await connection.close() } }
                return (try? await connection.kv.get(get, options: ProcessCluster.shortCall)) != nil
            }
            #expect(accepted, "a client of the added CA is accepted after the bundle changed")
            // The front's listeners follow too (HTTP per connection, gRPC restarted).
            let frontHTTP = try await HTTPSRequest.send(
                port: cluster.addresses(leader).frontHTTP.port, method: "GET", path: "/v1/cluster",
                tls: (tls.ca, tls.certificate, tls.privateKey))
            #expect(frontHTTP.status == 200, "\(frontHTTP.text)")
            let frontAccepted = await eventually(seconds: 10) {
                guard
                    let connection = try? MemberConnection(
                        host: "127.0.0.1", port: cluster.addresses(leader).front.port, tls: tls)
                else { return false }
                defer { Task { await connection.close() } }
                return (try? await connection.kv.get(get, options: ProcessCluster.shortCall)) != nil
            }
            #expect(frontAccepted, "the front's gRPC listener accepts the added CA's client")
            #expect(cluster.log(leader).contains("TLS files changed"))
            try await cluster.put("after", "reload", via: leader)
            #expect(try await cluster.get("after", via: cluster.ids.first { $0 != leader }!) == "reload")
            await cluster.closeConnections()
        }

        /// A part of the member that cannot start (its front's HTTP port is taken) stops the parts
        /// that did, in reverse order, and the process exits with status 1 naming the part.
        @Test func aMemberWhosePartCannotStartStopsCleanlyAndSaysWhich() async throws {
            let cluster = try ProcessCluster()
            let taken = cluster.addresses(1).frontHTTP
            let squatter = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: taken.host, port: taken.port).get()
            try cluster.start(1)
            let status = cluster.waitUntilExit(1)
            try await squatter.close()
            #expect(status == 1, "\(cluster.log(1))")
            let log = cluster.log(1)
            #expect(log.contains("while starting front"), "\(log)")
            let stopping = log.split(separator: "\n").filter { $0.contains("stopping") }
            #expect(stopping.last?.contains("service=raft") == true, "the Raft loop stops last: \(stopping)")
            #expect(log.contains("storage closed") && log.contains("member stopped"), "\(log)")
        }

        /// Configuration mistakes are named with their fix, and the process exits with status 2.
        @Test func configurationErrorsGiveClearMessages() throws {
            let cluster = try ProcessCluster()
            let broken = cluster.directory + "/broken.yaml"
            var text = try String(contentsOfFile: cluster.configPath(1), encoding: .utf8)
            text = text.replacingOccurrences(of: "master_key_file:", with: "master_key_fil:")
            try text.write(toFile: broken, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = ProcessCluster.binaries.appendingPathComponent("crm-node")
            process.arguments = ["--config", broken]
            let pipe = Pipe()
            process.standardError = pipe
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 2)
            #expect(output.contains("master_key_fil: unknown key; the keys here are"))

            let check = Process()
            check.executableURL = ProcessCluster.binaries.appendingPathComponent("crm-node")
            check.arguments = ["--config", cluster.configPath(1), "--check"]
            check.standardOutput = FileHandle.nullDevice
            try check.run()
            check.waitUntilExit()
            #expect(check.terminationStatus == 0)
        }

        /// Every running member reports the same applied index and state digest.
        private func expectConverged(_ cluster: ProcessCluster) async throws {
            #expect(
                await eventually(seconds: 10) { await cluster.converged() },
                "members did not converge on one applied index and state hash")
        }
    }
}

extension RealProcessTests {
    /// Membership changes on real processes.
    @Suite struct MembershipProcessTests {
        @Test func aNewMemberJoinsAsALearnerIsPromotedAndAnotherIsRemoved() async throws {
            let cluster = try ProcessCluster(ids: [1, 2, 3], spares: [4], snapshotEvery: 100)
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            for index in 0..<250 { try await cluster.put("before-\(index % 20)", "v\(index)", via: leader) }

            try cluster.start(4)
            let admin = try cluster.connection(leader, admin: true).admin
            let e = cluster.ports(4)
            var add = Crm_V1_AddLearnerRequest()
            add.id = 4
            add.endpoints.peer = "127.0.0.1:\(e.peer)"
            add.endpoints.client = "127.0.0.1:\(e.client)"
            add.endpoints.admin = "127.0.0.1:\(e.admin)"
            var options = ProcessCluster.shortCall
            options.timeout = .seconds(10)
            let added = try await admin.addLearner(add, options: options)
            #expect(added.members.contains { $0.id == 4 && !$0.voter })

            // The learner catches up (by snapshot: the leader compacted past its empty log).
            let target = try #require(await cluster.status(leader)).appliedIndex
            #expect(await eventually(seconds: 15) { (await cluster.status(4))?.appliedIndex ?? 0 >= target })
            #expect(try await cluster.get("before-19", via: 4, serializable: true) == "v239")

            var promote = Crm_V1_PromoteMemberRequest()
            promote.id = 4
            let promoted = try await admin.promoteMember(promote, options: options)
            #expect(promoted.members.contains { $0.id == 4 && $0.voter })

            // Four voters: with one of the founders down, three still make a quorum.
            let victim = cluster.ids.first { $0 != leader }!
            cluster.kill9(victim)
            try await cluster.put("with-four", "voters", via: leader)
            #expect(try await cluster.get("with-four", via: 4) == "voters")

            var remove = Crm_V1_RemoveMemberRequest()
            remove.id = victim
            let removed = try await admin.removeMember(remove, options: options)
            #expect(!removed.members.contains { $0.id == victim && $0.voter })
            try await cluster.put("after-removal", "ok", via: 4)
            #expect(try await cluster.get("after-removal", via: leader) == "ok")
            await cluster.closeConnections()
        }
    }
}
