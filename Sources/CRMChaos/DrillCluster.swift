import CRMClient
import ClusterHarness
import Foundation
import Node

/// What a drill adds to the shared process harness: a scratch cluster whose members reach one
/// another through proxies (when the scenario cuts links), the fronts the workload uses and its
/// application certificate.
extension ProcessCluster {
    /// A fresh cluster of `nodes` members in `directory`, its configs written, not started.
    /// With `proxied`, member i reaches member j at ports of its own, forwarded by `LinkProxies`.
    static func drill(
        nodes: Int, directory: String, binaries: URL, repository: URL, proxied: Bool
    ) async throws -> (ProcessCluster, LinkProxies?) {
        let cluster: ProcessCluster
        do {
            cluster = try ProcessCluster(
                ids: Array(1...UInt64(nodes)), directory: directory, binaries: binaries, repository: repository,
                clients: ["chaos", Self.attackerName], removesDirectory: false)
        } catch let error as HarnessError {
            throw ChaosError("\(error) (give the drill a fresh --report directory)")
        }
        guard proxied else {
            try cluster.writeConfigs(configure: Self.drillSettings)
            return (cluster, nil)
        }
        let proxies = LinkProxies()
        var routes: [UInt64: [UInt64: MemberAddresses]] = [:]
        for from in cluster.ids {
            for to in cluster.ids where to != from {
                var route = cluster.addresses(to)
                route.peer.port = try LoopbackPorts.reserve()
                route.client.port = try LoopbackPorts.reserve()
                try await proxies.listen(
                    port: route.peer.port, forwardingTo: cluster.addresses(to).peer.port, from: from, to: to)
                try await proxies.listen(
                    port: route.client.port, forwardingTo: cluster.addresses(to).client.port, from: from, to: to)
                routes[from, default: [:]][to] = route
            }
        }
        try cluster.writeConfigs(routes: routes, configure: Self.drillSettings)
        return (cluster, proxies)
    }

    /// The drill's load is many clients under one certificate: the front's per-client rate limit
    /// must not be what the drill measures.
    /// Sign-in attacks come through an application of their own; checkpoints come every second
    /// (so that a rewritten audit entry is found at once); 50 failed sign-ins a minute is an
    /// attack, and the application behind it is blocked.
    private static func drillSettings(_ config: inout NodeConfig) {
        config.front?.requestsPerSecond = 100_000
        config.front?.burst = 100_000
        config.crm?.auditCheckpointSeconds = 1
        config.crm?.authAttackFailuresPerMinute = 50
        config.crm?.isolateClients = true
    }

    /// The attacker's application (a client certificate of its own).
    static let attackerName = "intruder"

    var fronts: [Endpoint] { ids.map { addresses($0).front } }

    /// The certificate the workload runs under (an application, not the operator).
    var applicationTLS: ClientTLSFiles { tls(applicationName) }
    var applicationName: String { clients.count > 1 ? clients[1] : "app" }
}
