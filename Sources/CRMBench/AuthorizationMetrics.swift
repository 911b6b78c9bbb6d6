import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The members' `crm_authorization_duration_seconds` histogram, summed over members: the time
/// signed-in records calls spent on their authorization check, read around a benchmark cell.
enum AuthorizationMetrics {
    static let name = "crm_authorization_duration_seconds"

    /// The histogram's sum (seconds) and count over `health` listeners (nil: one did not answer).
    static func scrape(_ health: [String]) async -> (sum: Double, count: Double)? {
        guard !health.isEmpty else { return nil }
        var total = (sum: 0.0, count: 0.0)
        for endpoint in health {
            guard let url = URL(string: "http://\(endpoint)/metrics"),
                let (data, _) = try? await URLSession.shared.data(from: url)
            else { return nil }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                let parts = line.split(separator: " ")
                guard parts.count == 2, let value = Double(parts[1]) else { continue }
                if parts[0] == "\(name)_sum" { total.sum += value }
                if parts[0] == "\(name)_count" { total.count += value }
            }
        }
        return total
    }
}
