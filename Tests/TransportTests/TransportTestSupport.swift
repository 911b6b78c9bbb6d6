@_exported import CRMTestSupport
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import Synchronization

@testable import Transport

/// Certificates made by the real cluster/make-certs.sh in a temporary directory.
final class TestCertificates: Sendable {
    let directory: String

    init(members: String = "1,2,3", clients: [String] = ["crmctl"]) throws {
        directory = NSTemporaryDirectory() + "crm-certs-" + UUID().uuidString
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("cluster/make-certs.sh").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, directory, members] + clients
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    deinit { for path in [directory, directory + ".ca"] { try? FileManager.default.removeItem(atPath: path) } }

    func files(member id: NodeID) -> TLSFiles {
        TLSFiles(
            caBundle: directory + "/ca.pem", certificate: directory + "/member-\(id).pem",
            privateKey: directory + "/member-\(id).key")
    }

    /// Member `as`'s certificate presented by a process that says it is someone else.
    func files(certificateOf other: NodeID) -> TLSFiles { files(member: other) }

    func clientFiles(_ name: String) -> TLSFiles {
        TLSFiles(
            caBundle: directory + "/ca.pem", certificate: directory + "/client-\(name).pem",
            privateKey: directory + "/client-\(name).key")
    }
}

/// Collects what a transport delivers.
final class Inbox: PeerTransportDelegate, Sendable {
    let messages = Mutex<[(from: NodeID, message: Message)]>([])
    let snapshots = Mutex<[(peer: NodeID, delivered: Bool)]>([])

    func peerTransport(received messages: [Message], from peer: NodeID) {
        self.messages.withLock { $0 += messages.map { (peer, $0) } }
    }

    func peerTransport(snapshotTo peer: NodeID, delivered: Bool) {
        snapshots.withLock { $0.append((peer, delivered)) }
    }

    var count: Int { messages.withLock { $0.count } }
}

/// A member's transport listening on a free loopback port.
struct TestMember {
    let id: NodeID
    let transport: PeerTransport
    let inbox: Inbox
    let port: Int

    static func start(
        _ id: NodeID, files: TLSFiles, group: any EventLoopGroup, options: PeerTransportOptions = PeerTransportOptions()
    ) async throws -> TestMember {
        let inbox = Inbox()
        var logger = Logger(label: "test.peer")
        logger.logLevel = .critical
        let transport = PeerTransport(
            selfID: id, tls: try ReloadingTLSContexts(files: files), group: group, delegate: inbox,
            options: options,
            // Inside the certificates' directory, which goes when the test's certificates do.
            snapshotSpool: try SnapshotSpool(
                directory: (files.caBundle as NSString).deletingLastPathComponent + "/spool-\(id)-" + UUID().uuidString),
            logger: logger)
        let port = try await transport.listen(host: "127.0.0.1", port: 0)
        return TestMember(id: id, transport: transport, inbox: inbox, port: port)
    }

    var address: PeerAddress { PeerAddress(host: "127.0.0.1", port: port) }

    /// The files in this member's snapshot spool.
    var spoolFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: transport.snapshotSpool!.directory)) ?? []).sorted()
    }
}

/// Snapshot data made as it is read, a few bytes at a time, counting the readers still open
/// (the leader's pinned state stands in this way for a store larger than memory).
final class GeneratedSnapshot: SnapshotSource {
    let bytes: Int
    let openReaders = Atomic<Int>(0)

    init(bytes: Int) { self.bytes = bytes }

    static func byte(at offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 31 &+ offset >> 11) }

    func openReader() throws -> any SnapshotReader { Reader(self) }
    func makeDurable() throws {}

    final class Reader: SnapshotReader {
        let source: GeneratedSnapshot
        var offset = 0

        init(_ source: GeneratedSnapshot) {
            self.source = source
            source.openReaders.add(1, ordering: .relaxed)
        }

        func read(maxBytes: Int) throws -> [UInt8]? {
            guard offset < source.bytes else { return nil }
            let end = min(source.bytes, offset + min(maxBytes, 100_000))
            defer { offset = end }
            return (offset..<end).map(GeneratedSnapshot.byte(at:))
        }

        deinit { source.openReaders.subtract(1, ordering: .relaxed) }
    }
}

/// Sends `messages` until `inbox` holds at least `count` (a first send may find the connection
/// still being dialled), for at most `seconds`.
func sendUntilDelivered(
    _ transport: PeerTransport, _ messages: [Message], to inbox: Inbox, count: Int, seconds: Double = 5
) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if inbox.count >= count { return true }
        if transport.send(messages).isEmpty {
            if await eventually(seconds: 1, { inbox.count >= count }) { return true }
        } else {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }
    return inbox.count >= count
}

extension TestCertificates {
    /// Paths for a raw TLS connection presenting member `id`'s certificate.
    func raw(member id: NodeID) -> (ca: String, certificate: String, key: String) {
        let files = files(member: id)
        return (files.caBundle, files.certificate, files.privateKey)
    }

    func raw(client name: String) -> (ca: String, certificate: String, key: String) {
        let files = clientFiles(name)
        return (files.caBundle, files.certificate, files.privateKey)
    }
}
