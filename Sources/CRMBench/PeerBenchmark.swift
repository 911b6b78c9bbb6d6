import ArgumentParser
import CRMProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix
import Raft
import Synchronization
import Transport
import Wire

/// `crm-bench peers`: the members' framed peer protocol against the same traffic over a gRPC
/// bidirectional stream, both on mutual TLS over loopback in one process. Measures one-way
/// throughput of append batches and heartbeat round trips.
struct PeerBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Framed peer protocol versus a gRPC stream: append throughput and heartbeat round trips.")

    @Option(help: "Batches sent in the throughput run.") var batches = 2000
    @Option(help: "Append messages per batch.") var messagesPerBatch = 4
    @Option(help: "Entries per append message.") var entriesPerMessage = 16
    @Option(help: "Bytes per entry.") var entryBytes = 256
    @Option(help: "Heartbeat round trips.") var roundTrips = 2000
    @Option(help: "Directory for the certificates (made with cluster/make-certs.sh if absent).") var certificates:
        String?

    func run() async throws {
        let directory = certificates ?? NSTemporaryDirectory() + "crm-bench-peers"
        if !FileManager.default.fileExists(atPath: directory + "/member-2.pem") {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["cluster/make-certs.sh", directory, "1,2", "crmctl"]
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw ValidationError("cluster/make-certs.sh failed (run from the repository root)")
            }
        }
        let files = { (id: Int) in
            TLSFiles(
                caBundle: directory + "/ca.pem", certificate: directory + "/member-\(id).pem",
                privateKey: directory + "/member-\(id).key")
        }
        let workload = Workload(
            batches: batches, messagesPerBatch: messagesPerBatch, entriesPerMessage: entriesPerMessage,
            entryBytes: entryBytes)
        print(
            "crm-bench peers: \(batches) batches × \(messagesPerBatch) appends × \(entriesPerMessage) entries × \(entryBytes) B "
                + "(\(String(format: "%.1f", Double(workload.payloadBytes) / 1e6)) MB), \(roundTrips) heartbeat round trips"
        )
        let framed = try await FramedRun.measure(workload, roundTrips: roundTrips, files: files)
        let grpc = try await GRPCRun.measure(workload, roundTrips: roundTrips, files: files)
        for (name, result) in [("framed", framed), ("gRPC stream", grpc)] {
            print(
                String(
                    format: "%@: %.0f appends/s, %.1f MB/s; heartbeat round trip p50 %.0f µs, p99 %.0f µs",
                    name.padding(toLength: 11, withPad: " ", startingAt: 0), result.appendsPerSecond,
                    result.megabytesPerSecond,
                    result.roundTripP50Microseconds, result.roundTripP99Microseconds))
        }
    }

    struct Workload: Sendable {
        var batches: Int
        var messagesPerBatch: Int
        var entriesPerMessage: Int
        var entryBytes: Int

        var payloadBytes: Int { batches * messagesPerBatch * entriesPerMessage * entryBytes }
        var totalEntries: Int { batches * messagesPerBatch * entriesPerMessage }

        func batch(_ number: Int) -> [Message] {
            (0..<messagesPerBatch).map { position in
                var message = Message(kind: .append, from: 1, to: 2, term: 1)
                let first = UInt64((number * messagesPerBatch + position) * entriesPerMessage + 1)
                message.index = first - 1
                message.entries = (0..<entriesPerMessage).map {
                    Entry(
                        term: 1, index: first + UInt64($0),
                        data: [UInt8](repeating: UInt8(truncatingIfNeeded: $0), count: entryBytes))
                }
                return message
            }
        }
    }

    struct Result {
        var appendsPerSecond: Double
        var megabytesPerSecond: Double
        var roundTripP50Microseconds: Double
        var roundTripP99Microseconds: Double

        init(workload: Workload, seconds: Double, roundTrips: [UInt64]) {
            appendsPerSecond = Double(workload.batches * workload.messagesPerBatch) / seconds
            megabytesPerSecond = Double(workload.payloadBytes) / seconds / 1e6
            let sorted = roundTrips.sorted()
            roundTripP50Microseconds = Double(sorted[sorted.count / 2]) / 1000
            roundTripP99Microseconds = Double(sorted[min(sorted.count - 1, sorted.count * 99 / 100)]) / 1000
        }
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// Counts what arrives and signals round trips.
final class Arrivals: @unchecked Sendable {
    let entries = Mutex(0)
    let heartbeats = Mutex(0)

    func waitFor(entries target: Int, seconds: Double = 120) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if entries.withLock({ $0 }) >= target { return true }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
        return false
    }
}

// MARK: - Framed

enum FramedRun {
    final class Receiver: PeerTransportDelegate, @unchecked Sendable {
        let arrivals = Arrivals()
        var echo: PeerTransport?

        func peerTransport(received messages: [Message], from peer: NodeID) {
            arrivals.entries.withLock { $0 += messages.reduce(0) { $0 + $1.entries.count } }
            for message in messages where message.kind == .heartbeat {
                _ = echo?.send([
                    Message(kind: .heartbeatResponse, from: message.to, to: message.from, term: message.term)
                ])
            }
            if messages.contains(where: { $0.kind == .heartbeatResponse }) { arrivals.heartbeats.withLock { $0 += 1 } }
        }

        func peerTransport(snapshotTo peer: NodeID, delivered: Bool) {}
    }

    static func measure(
        _ workload: PeerBenchmark.Workload, roundTrips: Int, files: (Int) -> TLSFiles
    ) async throws -> PeerBenchmark.Result {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "bench.peer")
        logger.logLevel = .error
        let sender = Receiver()
        let receiver = Receiver()
        let one = PeerTransport(
            selfID: 1, tls: try ReloadingTLSContexts(files: files(1)), group: group, delegate: sender, logger: logger)
        let two = PeerTransport(
            selfID: 2, tls: try ReloadingTLSContexts(files: files(2)), group: group, delegate: receiver, logger: logger)
        receiver.echo = two
        let portOne = try await one.listen(host: "127.0.0.1", port: 0)
        let portTwo = try await two.listen(host: "127.0.0.1", port: 0)
        one.setPeers([2: PeerAddress(host: "127.0.0.1", port: portTwo)])
        two.setPeers([1: PeerAddress(host: "127.0.0.1", port: portOne)])
        // Warm up both directions.
        while one.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1)]).count > 0 {
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        _ = await eventually { sender.arrivals.heartbeats.withLock { $0 } > 0 }

        let started = PeerBenchmark.now()
        for number in 0..<workload.batches {
            let batch = workload.batch(number)
            // The send queue is bounded: a full queue refuses, and the sender waits a little.
            while !one.send(batch).isEmpty { try await Task.sleep(nanoseconds: 200_000) }
        }
        guard await receiver.arrivals.waitFor(entries: workload.totalEntries) else {
            throw ValidationError("framed run did not complete")
        }
        let seconds = Double(PeerBenchmark.now() - started) / 1e9

        var trips: [UInt64] = []
        for _ in 0..<roundTrips {
            let before = sender.arrivals.heartbeats.withLock { $0 }
            let sent = PeerBenchmark.now()
            _ = one.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1)])
            while sender.arrivals.heartbeats.withLock({ $0 }) == before { await Task.yield() }
            trips.append(PeerBenchmark.now() - sent)
        }
        await one.stop()
        await two.stop()
        try await group.shutdownGracefully()
        return PeerBenchmark.Result(workload: workload, seconds: seconds, roundTrips: trips)
    }

    static func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<5000 {
            if condition() { return true }
            try? await Task.sleep(nanoseconds: 1_000_000)
        }
        return false
    }
}

// MARK: - gRPC stream

enum GRPCRun {
    struct Service: Crm_V1_PeerStream.SimpleServiceProtocol {
        let arrivals: Arrivals

        func exchange(
            request: RPCAsyncSequence<Crm_V1_RaftBatch, any Error>, response: RPCWriter<Crm_V1_RaftBatch>,
            context: ServerContext
        ) async throws {
            for try await batch in request {
                let messages = try RaftMessageCoding.decode(Array(batch.messages))
                arrivals.entries.withLock { $0 += messages.reduce(0) { $0 + $1.entries.count } }
                for message in messages where message.kind == .heartbeat {
                    var answer = Crm_V1_RaftBatch()
                    answer.messages = Data(
                        RaftMessageCoding.encode([Message(kind: .heartbeatResponse, from: 2, to: 1, term: message.term)]
                        ))
                    try await response.write(answer)
                }
            }
        }
    }

    static func measure(
        _ workload: PeerBenchmark.Workload, roundTrips: Int, files: (Int) -> TLSFiles
    ) async throws -> PeerBenchmark.Result {
        let arrivals = Arrivals()
        let serverFiles = files(2)
        let clientFiles = files(1)
        let server = GRPCServer(
            transport: HTTP2ServerTransport.Posix(
                address: .ipv4(host: "127.0.0.1", port: 0),
                transportSecurity: .mTLS(
                    certificateChain: [.file(path: serverFiles.certificate, format: .pem)],
                    privateKey: .file(path: serverFiles.privateKey, format: .pem)
                ) { tls in
                    tls.trustRoots = .certificates([.file(path: serverFiles.caBundle, format: .pem)])
                    tls.clientCertificateVerification = .noHostnameVerification
                },
                config: .defaults { $0.rpc.maxRequestPayloadSize = 16 << 20 }),
            services: [Service(arrivals: arrivals)])
        let serving = Task { try await server.serve() }
        guard let address = try await server.listeningAddress?.ipv4 else {
            throw ValidationError("no gRPC listening address")
        }
        let client = GRPCClient(
            transport: try HTTP2ClientTransport.Posix(
                target: .ipv4(host: "127.0.0.1", port: address.port),
                transportSecurity: .mTLS(
                    certificateChain: [.file(path: clientFiles.certificate, format: .pem)],
                    privateKey: .file(path: clientFiles.privateKey, format: .pem)
                ) { tls in
                    tls.trustRoots = .certificates([.file(path: clientFiles.caBundle, format: .pem)])
                    tls.serverCertificateVerification = .noHostnameVerification
                }))
        let connections = Task { try await client.runConnections() }
        let peer = Crm_V1_PeerStream.Client(wrapping: client)
        let responses = Mutex(0)
        let (stream, continuation) = AsyncStream<[Message]>.makeStream()
        let call = Task {
            try await peer.exchange(
                requestProducer: { writer in
                    for await messages in stream {
                        var batch = Crm_V1_RaftBatch()
                        batch.messages = Data(RaftMessageCoding.encode(messages))
                        try await writer.write(batch)
                    }
                },
                onResponse: { response in
                    for try await _ in response.messages { responses.withLock { $0 += 1 } }
                })
        }
        continuation.yield([Message(kind: .heartbeat, from: 1, to: 2, term: 1)])
        _ = await FramedRun.eventually { responses.withLock { $0 } > 0 }

        let started = PeerBenchmark.now()
        for number in 0..<workload.batches { continuation.yield(workload.batch(number)) }
        guard await arrivals.waitFor(entries: workload.totalEntries) else {
            throw ValidationError("gRPC run did not complete")
        }
        let seconds = Double(PeerBenchmark.now() - started) / 1e9

        var trips: [UInt64] = []
        for _ in 0..<roundTrips {
            let before = responses.withLock { $0 }
            let sent = PeerBenchmark.now()
            continuation.yield([Message(kind: .heartbeat, from: 1, to: 2, term: 1)])
            while responses.withLock({ $0 }) == before { await Task.yield() }
            trips.append(PeerBenchmark.now() - sent)
        }
        continuation.finish()
        _ = try? await call.value
        client.beginGracefulShutdown()
        server.beginGracefulShutdown()
        _ = try? await connections.value
        _ = try? await serving.value
        return PeerBenchmark.Result(workload: workload, seconds: seconds, roundTrips: trips)
    }
}
