import Dispatch
import Logging
import NIOCore
import Raft
import Synchronization
import Wire

/// Streams one snapshot to a peer, on a thread of its own: it reads a chunk from the snapshot's
/// source, writes it to the connection, and keeps at most `maxChunksInFlight` written and not
/// yet sent, so the leader's memory for a snapshot is a few chunks whatever the store's size,
/// and a slow follower slows the reading down. Raft messages to the same peer go on meanwhile
/// (the follower delivers them while the snapshot arrives). The outcome is reported once.
final class SnapshotSender: Sendable {
    static let maxChunksInFlight = 4

    private let peer: NodeID
    private let channel: any Channel
    private let snapshot: Snapshot
    private let chunkBytes: Int
    private let transport: PeerTransport
    private let cancelled = Atomic<Bool>(false)

    init(peer: NodeID, channel: any Channel, snapshot: Snapshot, chunkBytes: Int, transport: PeerTransport) {
        precondition(chunkBytes > 0)
        self.peer = peer
        self.channel = channel
        self.snapshot = snapshot
        self.chunkBytes = chunkBytes
        self.transport = transport
    }

    func start() {
        DispatchQueue.global(qos: .utility).async { [self] in
            let delivered = run()
            transport.snapshotSent(to: peer, delivered: delivered)
        }
    }

    /// Stops before the next chunk (a newer snapshot replaces this one, or the peer closes).
    func cancel() { cancelled.store(true, ordering: .relaxed) }

    private func run() -> Bool {
        let index = snapshot.metadata.index
        let term = snapshot.metadata.term
        var offset: UInt64 = 0
        var checksum: UInt32 = 0
        var inFlight: [EventLoopFuture<Void>] = []
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            let reader = try snapshot.openReader()
            while true {
                guard !cancelled.load(ordering: .relaxed) else { throw SenderStopped.cancelled }
                let piece = try reader.read(maxBytes: chunkBytes)
                let chunk = SnapshotChunk(
                    index: index, term: term, offset: offset, isLast: piece == nil, data: piece ?? [],
                    previousChecksum: checksum)
                offset += UInt64(chunk.data.count)
                checksum = chunk.runningChecksum
                inFlight.append(write(chunk))
                if inFlight.count >= Self.maxChunksInFlight { try inFlight.removeFirst().wait() }
                if chunk.isLast { break }
            }
            for write in inFlight { try write.wait() }
        } catch {
            transport.logger.warning(
                "snapshot not sent",
                metadata: ["peer": "\(peer)", "index": "\(index)", "sent_bytes": "\(offset)", "error": "\(error)"])
            return false
        }
        let milliseconds = (DispatchTime.now().uptimeNanoseconds - started) / 1_000_000
        transport.logger.info(
            "snapshot sent",
            metadata: ["peer": "\(peer)", "index": "\(index)", "bytes": "\(offset)", "milliseconds": "\(milliseconds)"])
        return true
    }

    private func write(_ chunk: SnapshotChunk) -> EventLoopFuture<Void> {
        let payload = chunk.encoded
        var buffer = channel.allocator.buffer(capacity: payload.count + FrameHeader.byteCount)
        buffer.writeBytes(FrameHeader(type: .snapshotChunk, payloadBytes: UInt32(payload.count)).encoded)
        buffer.writeBytes(payload)
        return channel.writeAndFlush(buffer)
    }

    private enum SenderStopped: Error { case cancelled }
}
