import CRMClient
@_spi(Fuzzing) import KVStore
import Raft
@_spi(Fuzzing) import RaftStorage
import Sealing
import Simulation
@_spi(Fuzzing) import Storage
import Wire

/// Starting inputs for each harness, made from real traffic and real records: the messages the
/// simulator's members exchange (3- and 5-member clusters under faults), the frames and chunks
/// the transport would send for them, every KV command kind, sealed values and so on.
public enum SeedCorpus {
    public static func seeds(for harness: Harness, limit: Int = 2000) -> [[UInt8]] {
        switch harness {
        case .raftStep: return batches(limit: limit).enumerated().map { [UInt8($0.offset % 3)] + $0.element }
        case .wireRoundTrip: return batches(limit: limit)
        case .frameStream:
            return batches(limit: limit).map { batch in
                var helloPayload = [UInt8](repeating: 0, count: 8)
                helloPayload[7] = 2
                return Frame(type: .hello, payload: helloPayload).encoded
                    + Frame(type: .raftMessages, payload: batch).encoded
            }
        case .snapshotAssembly:
            return (0..<20).map { size in
                let data = (0..<(size * 97)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                let chunks = SnapshotChunk.split(data, index: 7, term: 2, chunkBytes: 64)
                var input = (0..<4).map { UInt8(truncatingIfNeeded: UInt64(data.count + 1) >> (24 - 8 * UInt64($0))) }
                for chunk in chunks {
                    let payload = chunk.encoded
                    input += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] + payload
                }
                return input
            }
        case .kvRecords: return KVStoreFuzzing.seeds()
        case .storageRecords: return RaftStorageFuzzing.seeds() + StorageFuzzing.seeds()
        case .sealed:
            let plaintexts: [[UInt8]] = [
                [], Array("Ada Lovelace".utf8), [UInt8](repeating: 65, count: 300), (0..<200).map { UInt8($0) },
            ]
            return plaintexts.flatMap { plain -> [[UInt8]] in
                let sealed = Self.key.withUnsafeBytes { place in
                    (try? SealedValue.seal(
                        plain, key: SealingHarness.key, location: SealedValue.Location(domain: 1, scope: 2, key: place)))
                        ?? []
                }
                return [
                    [0] + sealed, [2, UInt8(plain.count % 251)] + plain, [1, 0, UInt8(min(plain.count, 255))] + plain,
                ]
            }
        case .identity:
            return [
                "crm://member/1", "crm://member/18446744073709551615", "crm://client/app", "crm://client/a.b_c-d",
                "127.0.0.1:7001",
                "[::1]:7101", "localhost:65535", "crm://member/+5", "crm://client/élise",
            ].map { Array($0.utf8) }
        case .frontJSON:
            return [
                #"{"key": "YQ=="}"#, #"{"key": "YQ==", "consistency": "serializable"}"#,
                #"{"from": "YQ==", "to": "Yg==", "limit": 10}"#,
                #"{"key": "YQ==", "value": "Yg==", "session": {"id": 5, "sequence": 1}}"#,
                #"{"key": "YQ==", "expected": "Yg==", "value": "Yw=="}"#,
                #"{"key": "YQ==", "expect_absent": true, "delete": true}"#,
                #"{"session_id": 9007199254740991}"#, "{}", "[]", "null",
            ].map { Array($0.utf8) }
        }
    }

    static var key: [UInt8] { SealingHarness.locationKey }

    /// Batches of 1 to 4 messages, as members sent them in simulated runs.
    static func batches(limit: Int) -> [[UInt8]] {
        var messages: [Message] = []
        for (voters, seed) in [(3, 1), (3, 2), (5, 3), (3, 4), (5, 5)] {
            var options = SimulationOptions(voters: voters, seed: UInt64(seed))
            options.stepLimit = 200_000
            _ = Simulation(
                options: options,
                messageTap: { message in
                    if messages.count < limit * 4 { messages.append(message) }
                }
            ).run()
        }
        var batches: [[UInt8]] = []
        var position = 0
        while position < messages.count && batches.count < limit {
            let size = 1 + position % 4
            batches.append(RaftMessageCoding.encode(Array(messages[position..<min(messages.count, position + size)])))
            position += size
        }
        return batches
    }
}
