import Synchronization

/// The cluster's failed sign-ins over the last minute, counted by the leader (every password
/// and second-factor attempt is decided there), per application. More than `threshold` in a
/// minute is an attack (AUTH_ATTACK) until a full minute passes without the rate above it;
/// while one lasts, an application behind `blockShare` or more of the minute's failures is
/// named once for blocking. A new leader counts afresh.
public final class AuthAttackWatch: Sendable {
    public let threshold: Int
    /// Whether an application behind most failures is named for blocking (`crm.isolate_clients`).
    public let isolates: Bool
    public static let windowMillis: UInt64 = 60_000
    static let slotMillis: UInt64 = 5_000
    static let slotCount = Int(windowMillis / slotMillis)
    /// The share of a minute's failures that names an application for blocking.
    public static let blockShare = 0.9
    /// Applications counted in one slot; failures of further ones count under `others`.
    public static let maxApplicationsPerSlot = 1_000
    static let others = ""

    /// What one failure changed.
    public struct Decision: Equatable, Sendable {
        /// This failure took the minute's count past the threshold: an attack began.
        public var began = false
        /// The application to block (named once per attack).
        public var block: String?
        /// Failures in the last minute, this one included.
        public var failures = 0
        /// The named application's failures in the last minute.
        public var blockedFailures = 0
    }

    /// An attack in progress, for the health monitor.
    public struct Attack: Equatable, Sendable {
        public var sinceMillis: UInt64
        public var failures: Int
    }

    private struct Slot {
        var epoch: UInt64 = .max
        var failures: [String: Int] = [:]
    }

    private struct State {
        var slots = [Slot](repeating: Slot(), count: AuthAttackWatch.slotCount)
        var attackSince: UInt64?
        var lastOver: UInt64 = 0
        var named: Set<String> = []
    }

    private let state = Mutex(State())

    public init(threshold: Int, isolates: Bool) {
        precondition(threshold > 0, "an attack is at least one failure a minute")
        self.threshold = threshold
        self.isolates = isolates
    }

    /// Counts one failed sign-in through `application` at `now`.
    public func failed(application: String, now: UInt64) -> Decision {
        state.withLock { state in
            let epoch = now / Self.slotMillis
            let index = Int(epoch % UInt64(Self.slotCount))
            if state.slots[index].epoch != epoch { state.slots[index] = Slot(epoch: epoch) }
            let key =
                state.slots[index].failures[application] != nil
                    || state.slots[index].failures.count < Self.maxApplicationsPerSlot
                ? application : Self.others
            state.slots[index].failures[key, default: 0] += 1
            Self.expire(&state, now: now)
            let counts = Self.counts(state, epoch: epoch)
            var decision = Decision(failures: counts.values.reduce(0, +))
            guard decision.failures > threshold else { return decision }
            if state.attackSince == nil {
                state.attackSince = now
                decision.began = true
            }
            state.lastOver = now
            if isolates, let (leading, failures) = counts.max(by: { $0.value < $1.value }), leading != Self.others,
                Double(failures) >= Self.blockShare * Double(decision.failures), !state.named.contains(leading)
            {
                state.named.insert(leading)
                decision.block = leading
                decision.blockedFailures = failures
            }
            assert(decision.blockedFailures <= decision.failures, "a share of the failures, not more")
            return decision
        }
    }

    /// The attack in progress at `now`, if any.
    public func attack(now: UInt64) -> Attack? {
        state.withLock { state in
            Self.expire(&state, now: now)
            guard let since = state.attackSince else { return nil }
            return Attack(
                sinceMillis: since, failures: Self.counts(state, epoch: now / Self.slotMillis).values.reduce(0, +))
        }
    }

    /// Ends an attack a full minute after the rate was last above the threshold.
    private static func expire(_ state: inout State, now: UInt64) {
        guard state.attackSince != nil, now >= state.lastOver &+ windowMillis else { return }
        state.attackSince = nil
        state.named = []
    }

    private static func counts(_ state: State, epoch: UInt64) -> [String: Int] {
        var counts: [String: Int] = [:]
        for slot in state.slots where slot.epoch <= epoch && epoch - slot.epoch < UInt64(slotCount) {
            counts.merge(slot.failures, uniquingKeysWith: +)
        }
        return counts
    }
}
