import ArgumentParser
import CRMClient
import CRMProto
import Foundation
import GRPCCore

/// `crmctl alerts`: the security alerts (user.admin or audit.read): new devices, networks and
/// countries, impossible travel, success after failures, locks, the exfiltration guard and
/// attacks. `--follow` keeps printing new ones as they are raised (WatchAlerts).
struct Alerts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Security alerts (user.admin or audit.read); --follow waits for new ones.")
    @OptionGroup var options: ConnectionOptions
    @OptionGroup var signedIn: SignedIn
    @Option(help: "Only those after this cursor (the last column).") var after: String = ""
    @Option(help: "At most this many (1 to 1000).") var limit: UInt32 = 100
    @Flag(help: "Keep printing new alerts until interrupted.") var follow = false

    func run() async throws {
        var request = Crm_V1_ListAlertsRequest()
        request.after = after
        request.limit = limit
        let sent = request
        let json = options.json
        guard follow else {
            let alerts = try await signedIn.call(options) {
                try await $0.directory.listAlerts(sent, metadata: $1).alerts
            }
            try Self.print(alerts, json: json, header: true)
            return
        }
        try await signedIn.call(options) { connection, metadata in
            try await connection.directory.watchAlerts(sent, metadata: metadata) { response in
                var first = true
                for try await alert in response.messages {
                    try Self.print([alert], json: json, header: first)
                    first = false
                    fflush(nil)
                }
            }
        }
    }

    static func print(_ alerts: [Crm_V1_AlertInfo], json: Bool, header: Bool) throws {
        let rows = alerts.map {
            [
                ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0.timeMs) / 1000)), $0.kind,
                $0.userID, $0.application, $0.detail, $0.cursor,
            ]
        }
        let columns = ["TIME", "KIND", "USER", "APPLICATION", "DETAIL", "CURSOR"]
        switch (json, header) {
        case (true, _):
            for alert in alerts {
                Swift.print(String(decoding: try RecordJSON.data(RecordJSON.object(alert)), as: UTF8.self))
            }
        case (false, true):
            Output.table(columns, rows)
        default:
            for row in rows { Swift.print(row.joined(separator: "  ")) }
        }
    }
}
