import KVStore
import Transport

/// Every size bound of a member, derived from its configuration in one place, with the
/// relationships between them that must hold. `ConfigLoading` refuses a configuration that
/// breaks one (naming the key to change), and `NodeRuntime` asserts them again at start.
///
/// The chain a client's write travels: its request (gRPC message or HTTP body) → one log entry
/// (the command around the key and values) → an append message (at least one entry, whatever
/// its size) → a peer frame → the peer's send queue. Each must hold the largest of the one
/// before, or a write that was accepted could never be replicated.
public struct MemberLimits: Sendable, Equatable {
    /// Largest peer frame and gRPC request (`limits.max_message_bytes`).
    public var frameBytes: Int
    /// Bytes queued towards one peer (`limits.max_send_queue_bytes`).
    public var sendQueueBytes: Int
    /// Entry bytes in one append message: half a frame, at most 4 MiB (larger batches only
    /// lengthen the time a heartbeat waits behind them).
    public var appendBytes: Int
    /// Entry bytes in flight to one follower at most: a quarter of its send queue (at least one
    /// append). Without it a follower far behind is sent up to 256 appends of `appendBytes`
    /// at once — more than the queue holds, and all of it in the follower's memory.
    public var inflightBytes: Int
    /// Proposed bytes not yet committed at most; more proposals are refused `busy`.
    public var uncommittedBytes = 64 << 20
    /// Snapshot bytes in one frame.
    public var snapshotChunkBytes = 1 << 20

    /// The largest log entry a client's request can make (a compare-and-swap with the longest
    /// key and two values of the largest size), as the core counts it.
    public static let largestEntryBytes = KVCommand.maxEncodedBytes + 24
    /// Room in a frame for what surrounds entries or a snapshot chunk (frame and message
    /// headers, per-entry fields).
    public static let frameOverheadBytes = 64 << 10
    /// Largest front HTTP body: the largest key and value in base64 (a third larger), with
    /// room for the JSON around them.
    public static let httpBodyBytes = (KVLimits.maxKeyBytes + KVLimits.maxValueBytes) * 4 / 3 + 64 << 10
    /// Smallest `limits.max_message_bytes` that keeps every relationship.
    public static let smallestFrameBytes = 2 * (largestEntryBytes + frameOverheadBytes)

    public init(config: NodeConfig) {
        frameBytes = config.maxMessageBytes
        sendQueueBytes = config.maxSendQueueBytes
        appendBytes = min(config.maxMessageBytes / 2, 4 << 20)
        inflightBytes = max(appendBytes, config.maxSendQueueBytes / 4)
    }

    /// The relationships that do not hold, each naming what to change; empty when all do.
    public var problems: [String] {
        var problems: [String] = []
        if Self.largestEntryBytes > appendBytes {
            problems.append(
                "limits.max_message_bytes: \(frameBytes) leaves \(appendBytes) bytes for entries in one append, less than "
                    + "the largest entry a client can write (\(Self.largestEntryBytes)); use at least \(Self.smallestFrameBytes)"
            )
        }
        if appendBytes + Self.frameOverheadBytes > frameBytes {
            problems.append(
                "an append of \(appendBytes) bytes and its headers do not fit a frame of \(frameBytes) bytes")
        }
        if KVLimits.maxKeyBytes + 2 * KVLimits.maxValueBytes + Self.frameOverheadBytes > frameBytes {
            problems.append("limits.max_message_bytes: \(frameBytes) is smaller than the largest client request")
        }
        if sendQueueBytes < frameBytes {
            problems.append(
                "limits.max_send_queue_bytes (\(sendQueueBytes)) must be at least limits.max_message_bytes (\(frameBytes))"
            )
        }
        if inflightBytes + appendBytes > sendQueueBytes {
            problems.append(
                "the appends in flight to a follower (\(inflightBytes) bytes and one more append) exceed its send queue (\(sendQueueBytes))"
            )
        }
        if uncommittedBytes < Self.largestEntryBytes {
            problems.append(
                "the uncommitted-bytes bound (\(uncommittedBytes)) is below the largest entry (\(Self.largestEntryBytes))"
            )
        }
        if snapshotChunkBytes + Self.frameOverheadBytes > frameBytes {
            problems.append(
                "a snapshot chunk of \(snapshotChunkBytes) bytes does not fit a frame of \(frameBytes) bytes")
        }
        return problems
    }

    /// The peer transport's sizes.
    func apply(to options: inout PeerTransportOptions) {
        options.maxFrameBytes = frameBytes
        options.sendQueueBytes = sendQueueBytes
        options.snapshotChunkBytes = snapshotChunkBytes
    }
}
