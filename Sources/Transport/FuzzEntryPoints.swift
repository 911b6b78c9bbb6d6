import Wire

/// The transport's small decoders for the fuzzing harnesses.
@_spi(Fuzzing) public enum TransportFuzzing {
    /// The hello frame: an accepted id is non-zero and re-encodes to the same frame.
    public static func hello(_ payload: [UInt8]) {
        let frame = Frame(type: .hello, payload: payload)
        guard let id = try? Hello.decode(frame) else { return }
        precondition(id != 0 && Hello.encode(id) == frame, "a hello does not survive a round trip")
    }
}
