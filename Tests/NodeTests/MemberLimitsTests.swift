import Foundation
import KVStore
import Raft
import Testing
import Transport

@testable import Node

/// The size bounds fit together: the largest write a client can send makes an entry that fits
/// one append, which fits one frame, which fits the send queue; a configuration that breaks the
/// chain is refused when it loads, naming the smallest value that works.
@Suite struct MemberLimitsTests {
    private func config(_ limits: String = "") throws -> NodeConfig {
        let directory = try ConfigDirectory()
        return try NodeConfig.load(
            path: try directory.write(validConfig + (limits.isEmpty ? "" : "\nlimits:\n" + limits)))
    }

    @Test func theDefaultsKeepEveryRelationship() throws {
        let limits = MemberLimits(config: try config())
        #expect(limits.problems.isEmpty, "\(limits.problems)")
        #expect(MemberLimits.largestEntryBytes <= limits.appendBytes)
        #expect(limits.appendBytes + MemberLimits.frameOverheadBytes <= limits.frameBytes)
        #expect(limits.frameBytes <= limits.sendQueueBytes)
        #expect(MemberLimits.largestEntryBytes <= limits.uncommittedBytes)
        #expect(limits.snapshotChunkBytes + MemberLimits.frameOverheadBytes <= limits.frameBytes)
        // The engine is configured from the same values.
        let options = EngineOptions(config: try config())
        #expect(options.raftConfig(id: 1).maxMessageBytes == limits.appendBytes)
        #expect(options.raftConfig(id: 1).maxUncommittedBytes == limits.uncommittedBytes)
        var transport = PeerTransportOptions()
        limits.apply(to: &transport)
        #expect(transport.maxFrameBytes == limits.frameBytes && transport.sendQueueBytes == limits.sendQueueBytes)
    }

    @Test func theLargestCommandAClientCanMakeIsWithinItsBound() {
        let key = [UInt8](repeating: 1, count: KVLimits.maxKeyBytes)
        let value = [UInt8](repeating: 2, count: KVLimits.maxValueBytes)
        let owner = String(repeating: "o", count: KVCommand.maxOwnerBytes)
        let command = KVCommand.write(
            session: .max, sequence: .max, owner: owner, proposedAtMillis: .max,
            .compareAndSwap(key: key, expected: value, new: value))
        #expect(command.encoded.count <= KVCommand.maxEncodedBytes)
        #expect(Entry(term: 1, index: 1, data: command.encoded).sizeBytes <= MemberLimits.largestEntryBytes)
    }

    @Test func aFrameTooSmallForTheLargestEntryIsRefusedWithTheSmallestThatWorks() throws {
        #expect(throws: ConfigError.self) { try config("  max_message_bytes: 1048576") }
        do {
            _ = try config("  max_message_bytes: 1048576")
        } catch let error as ConfigError {
            #expect(
                error.problems.contains { $0.contains("use at least \(MemberLimits.smallestFrameBytes)") },
                "\(error.problems)")
        }
        #expect(
            MemberLimits(config: try config("  max_message_bytes: \(MemberLimits.smallestFrameBytes)")).problems.isEmpty
        )
        #expect(throws: ConfigError.self) {
            try config("  max_message_bytes: 16777216\n  max_send_queue_bytes: 8388608")
        }
    }
}
