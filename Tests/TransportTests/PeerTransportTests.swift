import Foundation
import NIOCore
import NIOPosix
import Raft
import Testing
import Wire

@testable import Transport

/// The peer transport over real mutual TLS on loopback.
@Suite(.serialized) struct PeerTransportTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    private func heartbeat(from: NodeID, to: NodeID, commit: UInt64 = 0) -> Message {
        var message = Message(kind: .heartbeat, from: from, to: to, term: 3)
        message.commit = commit
        return message
    }

    /// Members 1 and 2, each knowing where the other listens.
    private func connectedPair(_ certificates: TestCertificates) async throws -> (TestMember, TestMember) {
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group)
        let two = try await TestMember.start(2, files: certificates.files(member: 2), group: group)
        one.transport.setPeers([2: two.address])
        two.transport.setPeers([1: one.address])
        return (one, two)
    }

    private func stop(_ members: TestMember...) async {
        for member in members { await member.transport.stop() }
    }

    @Test func membersExchangeMessagesAndSnapshotsOverMutualTLS() async throws {
        let certificates = try TestCertificates()
        let (one, two) = try await connectedPair(certificates)

        #expect(
            await sendUntilDelivered(one.transport, [heartbeat(from: 1, to: 2, commit: 7)], to: two.inbox, count: 1))
        #expect(two.inbox.messages.withLock { $0.first?.from } == 1)
        #expect(two.inbox.messages.withLock { $0.first?.message.commit } == 7)
        #expect(await sendUntilDelivered(two.transport, [heartbeat(from: 2, to: 1)], to: one.inbox, count: 1))

        // A batch larger than one frame, and a snapshot of several chunks.
        var append = Message(kind: .append, from: 1, to: 2, term: 3)
        append.entries = (1...64).map {
            Entry(term: 3, index: UInt64($0), data: [UInt8](repeating: UInt8($0), count: 4096))
        }
        var snapshot = Message(kind: .snapshot, from: 1, to: 2, term: 3)
        let data = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        snapshot.snapshot = Snapshot(
            metadata: SnapshotMetadata(index: 500, term: 3, configuration: Configuration(voters: [1, 2, 3])), data: data
        )
        #expect(one.transport.send([append, snapshot]).isEmpty)
        #expect(await eventually { two.inbox.count >= 3 })
        let received = two.inbox.messages.withLock { $0.map(\.message) }
        #expect(received.contains { $0.kind == .append && $0.entries == append.entries })
        // The data arrives in the spool, not in memory: the message names the file.
        let arrived = try #require(received.first { $0.kind == .snapshot }?.snapshot)
        #expect(arrived.data.isEmpty && arrived.source is SpooledSnapshot)
        #expect(try arrived.materialized().data == data)
        #expect(two.spoolFiles == ["snapshot-500-3"])
        #expect(
            try Snapshot(
                metadata: arrived.metadata, data: [], source: two.transport.snapshotSpool!.received(index: 500, term: 3)
            ).materialized().data == data)
        #expect(await eventually { one.inbox.snapshots.withLock { $0.contains { $0.peer == 2 && $0.delivered } } })
        two.transport.snapshotSpool!.discard(through: 500)
        #expect(two.spoolFiles.isEmpty)
        await stop(one, two)
    }

    /// A snapshot read from its source as it goes (here 24 MiB made on the fly): messages to
    /// the same peer go on while it streams, the file that arrives holds exactly the data, and
    /// the sender lets go of its reader when done.
    @Test func aSnapshotStreamsFromItsSourceWhileMessagesGoOn() async throws {
        let certificates = try TestCertificates()
        let (one, two) = try await connectedPair(certificates)
        #expect(
            await sendUntilDelivered(one.transport, [heartbeat(from: 1, to: 2, commit: 1)], to: two.inbox, count: 1))

        let source = GeneratedSnapshot(bytes: 24 << 20)
        var snapshot = Message(kind: .snapshot, from: 1, to: 2, term: 4)
        snapshot.snapshot = Snapshot(
            metadata: SnapshotMetadata(index: 900, term: 4, configuration: Configuration(voters: [1, 2])), data: [],
            source: source)
        #expect(one.transport.send([snapshot]).isEmpty)
        for commit in 2...20 { _ = one.transport.send([heartbeat(from: 1, to: 2, commit: UInt64(commit))]) }
        #expect(
            await eventually(seconds: 30) {
                two.inbox.messages.withLock { $0.contains { $0.message.kind == .snapshot } }
            })
        let order = two.inbox.messages.withLock { $0.map(\.message) }
        let snapshotPosition = try #require(order.firstIndex { $0.kind == .snapshot })
        #expect(order[..<snapshotPosition].contains { $0.commit == 20 }, "heartbeats waited for the snapshot")
        let arrived = try #require(order[snapshotPosition].snapshot)
        let reader = try arrived.openReader()
        var offset = 0
        var matches = true
        while let piece = try reader.read(maxBytes: 1 << 20) {
            for (position, byte) in piece.enumerated() where byte != GeneratedSnapshot.byte(at: offset + position) {
                matches = false
            }
            offset += piece.count
        }
        #expect(matches && offset == 24 << 20)
        #expect(await eventually { one.inbox.snapshots.withLock { $0.contains { $0.peer == 2 && $0.delivered } } })
        #expect(source.openReaders.load(ordering: .relaxed) == 0)
        await stop(one, two)
    }

    /// A process that presents member 2's certificate but says it is member 3 is refused; so
    /// is a member that is not in the receiver's member list.
    @Test func aPeerWithTheCertificateOfAnotherMemberIsRefused() async throws {
        let certificates = try TestCertificates()
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group)
        let impostor = try await TestMember.start(3, files: certificates.files(certificateOf: 2), group: group)
        one.transport.setPeers([2: PeerAddress(host: "127.0.0.1", port: 1), 3: impostor.address])
        impostor.transport.setPeers([1: one.address])
        _ = await sendUntilDelivered(
            impostor.transport, [heartbeat(from: 3, to: 1)], to: one.inbox, count: 1, seconds: 1.5)
        #expect(one.inbox.count == 0)
        #expect(
            one.transport.refusedConnections.recent.contains(
                "hello claims member 3 but the certificate names crm://member/2"))

        let stranger = try await TestMember.start(3, files: certificates.files(member: 3), group: group)
        one.transport.setPeers([2: PeerAddress(host: "127.0.0.1", port: 1)])
        stranger.transport.setPeers([1: one.address])
        _ = await sendUntilDelivered(
            stranger.transport, [heartbeat(from: 3, to: 1)], to: one.inbox, count: 1, seconds: 1.5)
        #expect(one.inbox.count == 0)
        #expect(one.transport.refusedConnections.recent.contains("member 3 is not in this member's member list"))
        for member in [one, impostor, stranger] { await member.transport.stop() }
    }

    /// A certificate from another CA does not get through the TLS handshake.
    @Test func aCertificateFromAnotherCAIsRefused() async throws {
        let ours = try TestCertificates()
        let theirs = try TestCertificates()
        let one = try await TestMember.start(1, files: ours.files(member: 1), group: group)
        let foreign = try await TestMember.start(2, files: theirs.files(member: 2), group: group)
        one.transport.setPeers([2: foreign.address])
        foreign.transport.setPeers([1: one.address])
        _ = await sendUntilDelivered(
            foreign.transport, [heartbeat(from: 2, to: 1)], to: one.inbox, count: 1, seconds: 1.5)
        #expect(one.inbox.count == 0)
        let raw = try await RawConnection(port: one.port, tls: theirs.raw(client: "crmctl"))
        try? await raw.write(Hello.encode(2).encoded)
        #expect(await eventually(seconds: 3) { raw.isClosed })
        #expect(one.transport.refusedConnections.count >= 1)
        #expect(
            one.transport.refusedConnections.recent.allSatisfy {
                $0.contains("handshake") || $0.contains("certificate") || $0.contains("SSL")
            })
        await one.transport.stop()
        await foreign.transport.stop()
    }

    /// Garbage, a lie about a frame's size, a message claiming another sender and a truncated
    /// frame each close only their own connection; a good peer keeps being served.
    @Test func badInputClosesOnlyItsOwnConnection() async throws {
        let certificates = try TestCertificates()
        var options = PeerTransportOptions()
        options.maxFrameBytes = 1 << 20
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group, options: options)
        let two = try await TestMember.start(2, files: certificates.files(member: 2), group: group)
        one.transport.setPeers([2: two.address, 3: PeerAddress(host: "127.0.0.1", port: 1)])
        two.transport.setPeers([1: one.address])
        #expect(await sendUntilDelivered(two.transport, [heartbeat(from: 2, to: 1)], to: one.inbox, count: 1))

        let plain = try await RawConnection(port: one.port, tls: nil)
        try? await plain.write(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(await eventually(seconds: 3) { plain.isClosed })

        let garbage = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await garbage.write(Hello.encode(3).encoded + (0..<64).map { UInt8($0) })
        #expect(await eventually(seconds: 3) { garbage.isClosed })

        let oversized = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await oversized.write(
            Hello.encode(3).encoded + FrameHeader(type: .raftMessages, payloadBytes: 2 << 20).encoded)
        #expect(await eventually(seconds: 3) { oversized.isClosed })

        let spoofing = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        let forged = Frame(
            type: .raftMessages, payload: RaftMessageCoding.encode([heartbeat(from: 2, to: 1, commit: 99)]))
        try await spoofing.write(Hello.encode(3).encoded + forged.encoded)
        #expect(await eventually(seconds: 3) { spoofing.isClosed })

        let truncated = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        let good = Frame(
            type: .raftMessages, payload: RaftMessageCoding.encode([heartbeat(from: 3, to: 1, commit: 55)]))
        try await truncated.write(Hello.encode(3).encoded + Array(good.encoded.dropLast(3)))
        try await truncated.channel.close()

        let reasons = one.transport.refusedConnections.recent
        #expect(reasons.contains { $0.contains("not a crm frame") })
        #expect(reasons.contains("frame of 2097152 bytes exceeds the limit of 1048576 bytes"))
        #expect(reasons.contains("member 3 sent a message from 2 to 1"))
        let before = one.inbox.count
        #expect(
            await sendUntilDelivered(
                two.transport, [heartbeat(from: 2, to: 1, commit: 1)], to: one.inbox, count: before + 1))
        #expect(
            one.inbox.messages.withLock {
                $0.allSatisfy { $0.from == 2 && $0.message.commit != 99 && $0.message.commit != 55 }
            })
        await one.transport.stop()
        await two.transport.stop()
    }
}
