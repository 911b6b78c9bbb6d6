import Foundation
import NIOCore
import NIOPosix
import Raft
import Testing
import Wire

@testable import Transport

/// The peer port against hostile connections (security review F5, F6, F13): what a client
/// certificate, an idle socket flood, a second connection, a removed member or an unfinished
/// snapshot can do, over real mutual TLS on loopback.
@Suite(.serialized) struct PeerHardeningTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    private func heartbeat(from: NodeID, to: NodeID) -> Message {
        Message(kind: .heartbeat, from: from, to: to, term: 3)
    }

    /// A client certificate is signed by the same CA, but it is refused as soon as TLS is up,
    /// and a frame announced before the hello may be 8 bytes at most: the 16 MiB announcement
    /// of the review's trigger closes the connection right after its header.
    @Test func aClientCertificateAndABigFrameBeforeTheHelloAreRefused() async throws {
        let certificates = try TestCertificates()
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group)
        one.transport.setPeers([2: PeerAddress(host: "127.0.0.1", port: 1), 3: PeerAddress(host: "127.0.0.1", port: 1)])

        let client = try await RawConnection(port: one.port, tls: certificates.raw(client: "crmctl"))
        try? await client.write([0xC3, 0x52, 0x01, 0x01, 0x00, 0xFF, 0xFF, 0xF0])
        #expect(await eventually(seconds: 3) { client.isClosed })

        let member = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await member.write([0xC3, 0x52, 0x01, 0x01, 0x00, 0xFF, 0xFF, 0xF0])
        #expect(await eventually(seconds: 3) { member.isClosed })

        let reasons = one.transport.refusedConnections.recent
        #expect(reasons.contains("the certificate names crm://client/crmctl, which is not a member"), "\(reasons)")
        #expect(reasons.contains("frame of 16777200 bytes exceeds the limit of 8 bytes"), "\(reasons)")
        await one.transport.stop()
    }

    /// Removing a member from the list closes the connection it had already made, and it
    /// cannot make another.
    @Test func aRemovedMembersConnectionIsClosed() async throws {
        let certificates = try TestCertificates()
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group)
        let two = try await TestMember.start(2, files: certificates.files(member: 2), group: group)
        one.transport.setPeers([2: two.address, 3: PeerAddress(host: "127.0.0.1", port: 1)])
        two.transport.setPeers([1: one.address])
        #expect(await sendUntilDelivered(two.transport, [heartbeat(from: 2, to: 1)], to: one.inbox, count: 1))

        one.transport.setPeers([3: PeerAddress(host: "127.0.0.1", port: 1)])
        let delivered = one.inbox.count
        // Member 2 goes on sending: over its old connection until that is closed, then over
        // new ones, whose hello is refused.
        let refused = await eventually(seconds: 10) {
            _ = two.transport.send([heartbeat(from: 2, to: 1)])
            try? await Task.sleep(nanoseconds: 20_000_000)
            return one.transport.refusedConnections.recent.contains {
                $0.contains("member 2 is not in this member's member list")
            }
        }
        #expect(refused, "\(one.transport.refusedConnections.recent)")
        #expect(one.inbox.count == delivered)
        await one.transport.stop()
        await two.transport.stop()
    }

    /// One accepted connection per member: a second one with the same certificate and hello
    /// replaces the first, which is closed.
    @Test func aSecondConnectionOfAMemberReplacesTheFirst() async throws {
        let certificates = try TestCertificates()
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group)
        one.transport.setPeers([3: PeerAddress(host: "127.0.0.1", port: 1)])
        let first = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await first.write(Hello.encode(3).encoded)
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(!first.isClosed)
        let second = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await second.write(Hello.encode(3).encoded)
        #expect(await eventually(seconds: 3) { first.isClosed })
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(!second.isClosed)
        await one.transport.stop()
    }

    /// A flood of idle sockets fills the listener; each new one pushes out the oldest that
    /// never said hello, the rest go at the handshake deadline, and a real member still gets in.
    @Test func idleSocketsMakeWayForAMemberAndCloseAtTheDeadline() async throws {
        let certificates = try TestCertificates()
        var options = PeerTransportOptions()
        options.connectionLimits = ConnectionLimits(
            maxConnections: 8, maxConnectionsPerAddress: 8, firstRequestTimeout: nil,
            idleTimeout: nil, requestReadTimeout: nil)
        options.handshakeTimeout = .milliseconds(1500)
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group, options: options)
        let two = try await TestMember.start(2, files: certificates.files(member: 2), group: group)
        one.transport.setPeers([2: two.address])
        two.transport.setPeers([1: one.address])

        var idle: [RawConnection] = []
        for _ in 0..<40 { idle.append(try await RawConnection(port: one.port, tls: nil)) }
        #expect(await eventually(seconds: 2) { idle.filter { !$0.isClosed }.count <= 8 })
        #expect(await sendUntilDelivered(two.transport, [heartbeat(from: 2, to: 1)], to: one.inbox, count: 1))
        #expect(await eventually(seconds: 3) { idle.allSatisfy(\.isClosed) })
        let counts = try #require(one.transport.connectionCounts)
        #expect(counts.evicted >= 32, "\(counts)")
        #expect(counts.open == 1, "\(counts)")
        await one.transport.stop()
        await two.transport.stop()
    }

    /// A snapshot that stops arriving is dropped at its idle deadline, with its partial file.
    @Test func aStalledSnapshotIsDroppedWithItsFile() async throws {
        let certificates = try TestCertificates()
        var options = PeerTransportOptions()
        options.snapshotIdleTimeout = .milliseconds(300)
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group, options: options)
        one.transport.setPeers([3: PeerAddress(host: "127.0.0.1", port: 1)])
        let chunks = SnapshotChunk.split([UInt8](repeating: 1, count: 1 << 20), index: 9, term: 3, chunkBytes: 1 << 19)
        let raw = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
        try await raw.write(
            Hello.encode(3).encoded + Frame(type: .raftMessages, payload: RaftMessageCoding.encode([announce])).encoded
                + Frame(type: .snapshotChunk, payload: chunks[0].encoded).encoded)
        #expect(await eventually(seconds: 3) { one.spoolFiles == ["receiving-9-3"] })
        #expect(await eventually(seconds: 3) { raw.isClosed })
        #expect(one.transport.refusedConnections.recent.contains("a snapshot stopped arriving for 300 ms"))
        #expect(one.spoolFiles.isEmpty)
        #expect(one.inbox.count == 0)
        await one.transport.stop()
    }

    /// A chunk that fails its running checksum, or runs past the size limit, closes the
    /// connection and drops the partial file; nothing is delivered.
    @Test func aDamagedOrOversizedSnapshotIsRefusedWithItsFile() async throws {
        let certificates = try TestCertificates()
        var options = PeerTransportOptions()
        options.maxSnapshotBytes = 1 << 20
        let one = try await TestMember.start(1, files: certificates.files(member: 1), group: group, options: options)
        one.transport.setPeers([3: PeerAddress(host: "127.0.0.1", port: 1)])
        let good = SnapshotChunk.split([UInt8](repeating: 2, count: 3 << 19), index: 9, term: 3, chunkBytes: 1 << 19)
        var damaged = good[1]
        damaged.data[7] ^= 0x40
        let cases: [([SnapshotChunk], String)] = [
            ([good[0], damaged], "snapshot chunk at offset 524288 fails its checksum"),
            (Array(good.prefix(3)), "the snapshot runs past the limit of 1048576 bytes"),
        ]
        for (chunks, reason) in cases {
            let raw = try await RawConnection(port: one.port, tls: certificates.raw(member: 3))
            var bytes =
                Hello.encode(3).encoded
                + Frame(type: .raftMessages, payload: RaftMessageCoding.encode([announce])).encoded
            for chunk in chunks { bytes += Frame(type: .snapshotChunk, payload: chunk.encoded).encoded }
            try await raw.write(bytes)
            #expect(await eventually(seconds: 3) { raw.isClosed })
            #expect(
                one.transport.refusedConnections.recent.contains { $0.contains(reason) },
                "\(one.transport.refusedConnections.recent)")
            #expect(one.spoolFiles.isEmpty)
        }
        #expect(one.inbox.count == 0)
        await one.transport.stop()
    }

    private var announce: Message {
        var message = Message(kind: .snapshot, from: 3, to: 1, term: 3)
        message.snapshot = Snapshot(
            metadata: SnapshotMetadata(index: 9, term: 3, configuration: Configuration(voters: [1, 3])), data: [])
        return message
    }
}
