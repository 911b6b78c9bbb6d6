/// The key ring's state decoder for the fuzzing harnesses: whatever decodes satisfies the
/// state's invariants and re-encodes to the same value; a broken property traps.
@_spi(Fuzzing) public enum StorageFuzzing {
    public static func records(_ bytes: [UInt8]) {
        guard let state = try? KeyRingState.decode(bytes) else { return }
        precondition((try? state.checkInvariants()) != nil, "a decoded key ring state breaks its invariants")
        precondition(
            (try? KeyRingState.decode(state.encode())) == state, "a key ring state does not survive a round trip")
    }
}

extension StorageFuzzing {
    public static func seeds() -> [[UInt8]] { [KeyRingState.initial(firstKeyID: 1).encode()] }
}
