/// Wall-clock timing and latency percentiles for one benchmark phase.
struct PhaseResult {
    let engine: String
    let phase: String
    let operations: Int
    let seconds: Double
    /// Per-operation latencies in nanoseconds, when the phase timed each operation.
    let latenciesNanos: [UInt64]

    var operationsPerSecond: Double { Double(operations) / seconds }

    func percentileMicros(_ fraction: Double) -> Double? {
        guard !latenciesNanos.isEmpty else { return nil }
        let sorted = latenciesNanos.sorted()
        let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)
        return Double(sorted[max(0, index)]) / 1000
    }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    var nanoseconds: UInt64 {
        UInt64(components.seconds) * 1_000_000_000 + UInt64(components.attoseconds / 1_000_000_000)
    }
}

/// Deterministic generator (SplitMix64), so that both engines see the same keys and reads.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func formatted(_ value: Double, decimals: Int) -> String {
    precondition((0...6).contains(decimals))
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int64((abs(value) * scale).rounded())
    let sign = value < 0 && scaled != 0 ? "-" : ""
    guard decimals > 0 else { return sign + "\(scaled)" }
    let whole = scaled / Int64(scale)
    let fraction = String(scaled % Int64(scale))
    return sign + "\(whole)." + String(repeating: "0", count: decimals - fraction.count) + fraction
}

func padded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
