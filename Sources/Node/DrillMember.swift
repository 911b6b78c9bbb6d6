import Foundation
import Sealing

extension NodeConfig {
    /// The config of a restore drill's member, under `directory`: this member's id, TLS files,
    /// admins, CRM key and backup key; a new master key and data directory of its own; every
    /// listener on 127.0.0.1 at a free port; alone (no peers, front, failover, backup schedule
    /// or log archive). Written with the master key by `crm-node --drill-config`, for
    /// `crmctl backup drill`: the restored member never reaches the cluster it came from.
    public func drillMember(directory: String) throws -> NodeConfig {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let masterKey = directory + "/master.key"
        _ = try FileMasterKeyProvider.generateKeyFile(at: masterKey)
        func loopback() throws -> Endpoint { Endpoint(host: "127.0.0.1", port: try LoopbackPorts.reserve()) }
        let listen = Listen(peer: try loopback(), client: try loopback(), admin: try loopback(), health: try loopback())
        var drill = NodeConfig(
            id: id, dataDir: directory + "/data", masterKeyFile: masterKey, listen: listen,
            members: [MemberEndpoints(id: id, peer: listen.peer, client: listen.client, admin: listen.admin)],
            tls: tls, admins: admins, timing: timing, limits: limits, crm: crm)
        if let backup {
            drill.backup = Backup(
                targets: [directory + "/targets"], keyFile: backup.keyFile, everyHours: 0, archiveSeconds: 0)
        }
        return drill
    }
}
