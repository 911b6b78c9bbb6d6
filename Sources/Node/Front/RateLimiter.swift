import Dispatch
import GRPCCore
import Synchronization
import Transport

/// A token bucket: `rate` tokens a second up to `burst`; each request takes one.
struct TokenBucket: Sendable {
    let rate: Double
    let burst: Double
    private(set) var tokens: Double
    private var updatedAt: UInt64

    init(rate: Double, burst: Double, now: UInt64) {
        precondition(rate > 0 && burst >= 1)
        self.rate = rate
        self.burst = burst
        tokens = burst
        updatedAt = now
    }

    /// Takes a token if there is one; otherwise says how long until there will be.
    mutating func take(now: UInt64) -> (allowed: Bool, retryAfterMilliseconds: UInt64) {
        if now > updatedAt {
            tokens = min(burst, tokens + Double(now - updatedAt) / 1e9 * rate)
            updatedAt = now
        }
        if tokens >= 1 {
            tokens -= 1
            return (true, 0)
        }
        let wait = (1 - tokens) / rate * 1000
        return (false, UInt64(wait.rounded(.up)))
    }
}

/// One token bucket per client identity. The table is bounded: when it is full, the bucket
/// untouched longest is dropped (it has refilled meanwhile, so its client loses nothing).
final class RateLimiter: Sendable {
    let rate: Double
    let burst: Double
    let maxClients: Int
    private let buckets = Mutex<[String: (bucket: TokenBucket, usedAt: UInt64)]>([:])

    init(rate: Double, burst: Double, maxClients: Int = 10_000) {
        self.rate = rate
        self.burst = burst
        self.maxClients = maxClients
    }

    func admit(
        _ client: String, now: UInt64 = DispatchTime.now().uptimeNanoseconds
    ) -> (allowed: Bool, retryAfterMilliseconds: UInt64) {
        buckets.withLock { buckets in
            if buckets[client] == nil && buckets.count >= maxClients {
                let idlest = buckets.min { $0.value.usedAt < $1.value.usedAt }!.key
                buckets[idlest] = nil
            }
            var entry = buckets[client] ?? (TokenBucket(rate: rate, burst: burst, now: now), now)
            let verdict = entry.bucket.take(now: now)
            entry.usedAt = now
            buckets[client] = entry
            return verdict
        }
    }
}

extension RateLimiter {
    /// Takes a token for `identity`, or throws RESOURCE_EXHAUSTED saying when to retry (the
    /// `retry-after-ms` metadata too). Shared by every gRPC entry that limits its callers.
    func require(_ identity: PeerIdentity) throws {
        let verdict = admit(identity.description)
        guard !verdict.allowed else { return }
        var metadata = Metadata()
        metadata.addString("\(verdict.retryAfterMilliseconds)", forKey: RefusalMetadata.retryAfter)
        throw RPCError(
            code: .resourceExhausted,
            message:
                "rate limited: \(identity) may make \(Int(rate)) requests a second (burst \(Int(burst))); retry after \(verdict.retryAfterMilliseconds) ms",
            metadata: metadata)
    }
}
