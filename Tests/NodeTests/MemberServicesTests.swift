import CRMTestSupport
import ClusterHarness
import Foundation
import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization
import Testing

@testable import Node

/// The member's parts run as services of one group: started together, stopped in the reverse of
/// their start order, and a part that cannot start stops the others and leaves nothing open.
@Suite(.serialized) struct MemberServicesTests {
    @Test func aPartThatCannotStartStopsTheOthersAndReleasesTheStoreAndPorts() async throws {
        let files = try LocalClusterFiles(ids: [1])
        let health = files.cluster.addresses(1).health
        let squatter = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: health.host, port: health.port).get()
        let lines = CapturedLog()
        do {
            _ = try await files.startNode(1, logger: lines.logger)
            Issue.record("the member started although its health port was taken")
        } catch let error as StartupError {
            #expect(error.service == "health server", "\(error)")
        }
        #expect(lines.contains("stopping", service: "raft"), "the Raft loop that had started was stopped: \(lines.all)")
        try await squatter.close()

        // The same store and ports serve a new start: the store's lock and the peer port were released.
        let node = try await files.startNode(1)
        #expect(await waitUntil { node.engine?.currentStatus.role == .leader })
        await node.stop()
    }

    @Test func stoppingRunsThePartsInReverseOrderAndTheRaftLoopLast() async throws {
        let files = try LocalClusterFiles(ids: [1])
        let lines = CapturedLog()
        let node = try await files.startNode(1, logger: lines.logger)
        #expect(await waitUntil { node.engine?.currentStatus.role == .leader })
        await node.stop()
        let stopped = lines.all.filter { $0.message == "stopping" }.compactMap { $0.metadata["service"] }
        #expect(stopped == ["health server", "API servers", "member poller", "health monitor", "raft"], "\(stopped)")
        #expect(lines.all.last?.message == "member stopped")
    }
}

/// Log lines kept in memory, for tests that check what a member logged and in which order.
final class CapturedLog: Sendable {
    struct Line: Sendable {
        var message: String
        var metadata: [String: String]
    }

    private let lines = Mutex<[Line]>([])

    var all: [Line] { lines.withLock { $0 } }

    func contains(_ message: String, service: String) -> Bool {
        all.contains { $0.message == message && $0.metadata["service"] == service }
    }

    var logger: Logger {
        Logger(label: "test.captured") { _ in Handler(sink: self) }
    }

    fileprivate func append(_ line: Line) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let sink: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            sink.append(Line(message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}
