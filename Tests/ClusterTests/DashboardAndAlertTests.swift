import ClusterHarness
import Foundation
import Testing

/// The Grafana dashboard and the Prometheus alert rules in `ops/` name only metrics that a
/// member exports: a cluster serves some traffic through a front, every member's `/metrics` is
/// scraped, and every `crm_*` name in the files must be among them (histograms by their
/// `_bucket`, `_sum` and `_count` series). `make test` also runs `promtool check rules` and
/// `promtool test rules` on the alert rules.
extension RealProcessTests {
    @Suite struct DashboardAndAlertTests {
        static func namedMetrics(in file: String) throws -> Set<String> {
            let text = try String(contentsOf: ProcessCluster.repository.appendingPathComponent(file), encoding: .utf8)
            let pattern = try NSRegularExpression(pattern: "crm_[a-z_]+")
            let matches = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text))
            return Set(matches.map { String(text[Range($0.range, in: text)!]) })
        }

        static func exportedSeries(_ metrics: String) -> Set<String> {
            Set(
                metrics.split(separator: "\n").compactMap { line -> String? in
                    guard line.hasPrefix("crm_") else { return nil }
                    return String(line.prefix { $0 != "{" && $0 != " " })
                })
        }

        @Test func everyMetricADashboardOrAlertNamesIsExported() async throws {
            let dashboard = try Self.namedMetrics(in: "ops/grafana/crm-cluster.json")
            let alerts = try Self.namedMetrics(in: "ops/prometheus/crm-alerts.yml")
            #expect(dashboard.count >= 30 && alerts.count >= 14, "\(dashboard.count) and \(alerts.count) metrics named")
            let dashboardJSON = try Data(
                contentsOf: ProcessCluster.repository.appendingPathComponent("ops/grafana/crm-cluster.json"))
            let panels =
                (try JSONSerialization.jsonObject(with: dashboardJSON) as? [String: Any])?["panels"] as? [[String: Any]]
                ?? []
            #expect(panels.count >= 25)

            let cluster = try ProcessCluster()
            try cluster.startAll()
            let leader = try #require(await cluster.waitForLeader())
            let front = try #require(cluster.ids.first { $0 != leader })
            #expect(await cluster.frontSeesEveryMemberReadable(front))
            for index in 0..<5 {
                let key = Data("metrics-\(index)".utf8).base64EncodedString()
                let put = try await cluster.frontHTTP(
                    front, "POST", "/v1/kv/put", json: #"{"key": "\#(key)", "value": "\#(key)"}"#)
                #expect(put.status == 200, "\(put.text)")
                let get = try await cluster.frontHTTP(front, "POST", "/v1/kv/get", json: #"{"key": "\#(key)"}"#)
                #expect(get.status == 200, "\(get.text)")
            }
            var exported: Set<String> = []
            for id in cluster.ids {
                let scrape = await cluster.health(id)
                #expect(scrape.status == 200)
                exported.formUnion(Self.exportedSeries(scrape.body))
            }
            let missing = dashboard.union(alerts).filter {
                !exported.contains($0) && !exported.contains($0 + "_bucket")
            }
            #expect(missing.isEmpty, "named in ops/ but not exported: \(missing.sorted())")
            #expect(exported.contains("crm_tls_certificate_expiry_timestamp_seconds"))
            await cluster.closeConnections()
        }
    }
}
