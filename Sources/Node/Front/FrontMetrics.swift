import Prometheus
import Raft
import Synchronization

/// The front's Prometheus metrics, in the member's registry.
final class FrontMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let rateLimitedTotal: Counter
    private let retriedTotal: Counter
    private let outcomes = Mutex<[String: Counter]>([:])
    private let routable = Mutex<[NodeID: Gauge]>([:])

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        rateLimitedTotal = registry.makeCounter(
            name: "crm_front_rate_limited_total", help: "Front requests refused by a client's rate limit")
        retriedTotal = registry.makeCounter(
            name: "crm_front_retries_total", help: "Extra attempts the front made (leader changes, failed members)")
    }

    func rateLimited() { rateLimitedTotal.increment() }

    func finished(_ operation: String, outcome: String, attempts: Int) {
        if attempts > 1 { retriedTotal.increment(by: Int64(attempts - 1)) }
        let key = operation + "/" + outcome
        let counter = outcomes.withLock { counters in
            if let existing = counters[key] { return existing }
            let made = registry.makeCounter(
                name: "crm_front_requests_total", labels: [("op", operation), ("outcome", outcome)],
                help: "Front requests by operation and outcome")
            counters[key] = made
            return made
        }
        counter.increment()
    }

    /// 1 while a member takes the front's reads, 0 while it is ejected.
    func setRoutable(_ member: NodeID, _ isRoutable: Bool) {
        let gauge = routable.withLock { gauges in
            if let existing = gauges[member] { return existing }
            let made = registry.makeGauge(
                name: "crm_front_member_routable", labels: [("member", "\(member)")],
                help: "1 while the member takes this front's reads, 0 while ejected")
            gauges[member] = made
            return made
        }
        gauge.set(to: isRoutable ? 1 : 0)
    }
}
