@_spi(Fuzzing) import KVStore
@_spi(Fuzzing) import Node
import Raft
@_spi(Fuzzing) import RaftStorage
import Sealing
@_spi(Fuzzing) import Storage
@_spi(Fuzzing) import Transport
import Wire

/// The fuzzing harnesses: each takes any bytes and drives one decoder (or the consensus core)
/// with them, checking the properties that must hold whatever the input. A broken property
/// traps, and libFuzzer (`crm-fuzz` built with `-sanitize=fuzzer,address`) reports the input;
/// in CI the same bodies run as property tests over seeded random inputs and the saved crash
/// inputs (Tests/FuzzTests).
public enum Harness: String, CaseIterable, Sendable {
    /// A 3-voter Raft member (leader, follower or candidate, by the first byte) stepped with
    /// the decoded messages of the rest, then ticked.
    case raftStep = "raft-step"
    /// The frame decoder fed the input in pieces (split points from the input).
    case frameStream = "frame-stream"
    /// Raft message batches, snapshot chunks and hellos: what decodes re-encodes alike.
    case wireRoundTrip = "wire-round-trip"
    /// Snapshot chunks reassembled (total capped at 1 MiB).
    case snapshotAssembly = "snapshot-assembly"
    /// KV commands, member addresses, session records, positions and KV snapshots.
    case kvRecords = "kv-records"
    /// Durable-log records, membership changes and the key ring state.
    case storageRecords = "storage-records"
    /// Sealed values opened, LZ4 blocks decompressed, and seal-then-flip detected.
    case sealed
    /// Identity URIs, client names and host:port endpoints.
    case identity
    /// The front's JSON request bodies and error replies.
    case frontJSON = "front-json"

    /// Runs the harness on one input.
    public func run(_ input: [UInt8]) {
        switch self {
        case .raftStep: RaftStepHarness.run(input)
        case .frameStream: WireHarnesses.frameStream(input)
        case .wireRoundTrip: WireHarnesses.roundTrip(input)
        case .snapshotAssembly: WireHarnesses.snapshotAssembly(input)
        case .kvRecords: KVStoreFuzzing.records(input)
        case .storageRecords:
            RaftStorageFuzzing.records(input)
            StorageFuzzing.records(input)
        case .sealed: SealingHarness.run(input)
        case .identity: IdentityHarness.run(input)
        case .frontJSON: FrontFuzzing.json(input)
        }
    }

    /// Whether the structure-aware mutator (see `MessageMutator`) applies: inputs that carry
    /// framed Raft messages.
    public var mutatesMessages: Bool { self == .raftStep || self == .wireRoundTrip }
}
