import BinaryCoding

/// The state machine's decoders for the fuzzing harnesses (`crm-fuzz`, and the property tests
/// that run the same bodies in CI). Each takes any bytes; whatever decodes must encode back to
/// bytes that decode to the same value. A broken property traps (the fuzzer reports it).
@_spi(Fuzzing) public enum KVStoreFuzzing {
    public static func records(_ bytes: [UInt8]) {
        if let command = KVCommand(encoded: bytes) {
            precondition(KVCommand(encoded: command.encoded) == command, "a KV command does not survive a round trip")
        }
        if let addresses = MemberAddresses(encoded: bytes) {
            precondition(
                MemberAddresses(encoded: addresses.encoded) == addresses, "member addresses do not survive a round trip"
            )
        }
        if let session = SessionCoding.decode(bytes), session.lastOutcome.map(isWriteOutcome) ?? true {
            precondition(
                SessionCoding.decode(SessionCoding.encode(session)) == session,
                "a session record does not survive a round trip")
        }
        if let position = try? ReplicatedKV.decodePosition(bytes) {
            precondition(
                try! ReplicatedKV.decodePosition(ReplicatedKV.encode(position)) == position,
                "a position does not survive a round trip")
        }
        if let (position, records) = try? ReplicatedKV.parseSnapshot(bytes) {
            precondition(
                records.allSatisfy { record in StateKeys.allPrefixes.contains { record.key.starts(with: $0) } })
            _ = position
        }
    }

    private static func isWriteOutcome(_ outcome: KVOutcome) -> Bool {
        switch outcome {
        case .put, .deleted, .compareAndSwap, .refused: return true
        default: return false
        }
    }
}

extension KVStoreFuzzing {
    /// One record of every kind the state machine stores or reads.
    public static func seeds() -> [[UInt8]] {
        let writes: [KVWrite] = [
            .put(key: Array("k".utf8), value: Array("v".utf8)), .delete(key: Array("k".utf8)),
            .compareAndSwap(key: Array("k".utf8), expected: nil, new: Array("n".utf8)),
        ]
        var seeds = [
            KVCommand.openSession(id: 77, owner: "crm://client/app", proposedAtMillis: 1).encoded,
            KVCommand.closeSession(session: 77, owner: "crm://client/app", proposedAtMillis: 2).encoded,
        ]
        seeds += writes.map {
            KVCommand.write(session: 77, sequence: 1, owner: "crm://member/2", proposedAtMillis: 3, $0).encoded
        }
        seeds.append(
            KVCommand.memberEndpoints(
                MemberAddresses(id: 4, peer: "10.0.0.4:7001", client: "10.0.0.4:7101", admin: "10.0.0.4:7201")
            ).encoded)
        let outcomes: [KVOutcome?] = [
            nil, .put, .deleted(existed: true), .compareAndSwap(swapped: false), .refused("too big"),
        ]
        seeds += outcomes.map {
            SessionCoding.encode(
                SessionTable.Session(
                    owner: "crm://client/app", lastSequence: 3, lastOutcome: $0,
                    activeAtIndex: 9, activeAtMillis: 10))
        }
        seeds.append(ReplicatedKV.encode(ReplicatedKV.Position(index: 5, term: 2, logClockMillis: 1000)))
        var snapshot = BinaryWriter()
        snapshot.u8(ReplicatedKV.snapshotVersion)
        snapshot.u64(5); snapshot.u64(2); snapshot.u64(1000)
        snapshot.blob(StateKeys.value(Array("k".utf8))); snapshot.blob(Array("v".utf8))
        seeds.append(snapshot.bytes)
        return seeds
    }
}
