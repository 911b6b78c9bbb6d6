import CRMTestSupport
import Dispatch
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import CRMChaos

/// The proxies between members, on real loopback sockets: a clear link passes bytes, a cut one
/// swallows them and the connection is closed at the heal, a one-way cut keeps the other way,
/// a slow link delivers late and in order.
@Suite struct LinkProxyTests {
    /// A TCP server that keeps what it receives, with when the first byte came.
    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let received = Mutex<(bytes: [UInt8], firstAt: UInt64?)>(([], nil))

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: unwrapInboundIn(data))
            received.withLock { state in
                if state.firstAt == nil { state.firstAt = DispatchTime.now().uptimeNanoseconds }
                state.bytes += bytes
            }
        }

        var text: String { String(decoding: received.withLock { $0.bytes }, as: UTF8.self) }
    }

    struct Setup {
        let proxies = LinkProxies()
        let sink = Sink()
        let server: any Channel
        let proxyPort: Int

        init() async throws {
            let sink = self.sink
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(sink) }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            proxyPort = try TestSockets.freePort()
            try await proxies.listen(port: proxyPort, forwardingTo: server.localAddress!.port!, from: 1, to: 2)
        }

        func close() async {
            await proxies.shutdown()
            try? await server.close()
        }
    }

    @Test func aClearLinkPassesBytes() async throws {
        let setup = try await Setup()
        let client = try await RawConnection(port: setup.proxyPort, tls: nil)
        try await client.write(Array("hello".utf8))
        #expect(await eventually(seconds: 5) { setup.sink.text == "hello" })
        await client.close()
        await setup.close()
    }

    @Test func aCutLinkSwallowsBytesAndItsConnectionClosesAtTheHeal() async throws {
        let setup = try await Setup()
        let client = try await RawConnection(port: setup.proxyPort, tls: nil)
        try await client.write(Array("one ".utf8))
        #expect(await eventually(seconds: 5) { setup.sink.text == "one " })
        setup.proxies.update { $0.set(LinkCondition(blocked: true), from: 1, to: 2) }
        try await client.write(Array("lost".utf8))
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(setup.sink.text == "one ", "nothing crosses a cut link")
        #expect(!client.isClosed, "a cut link hangs; it does not reset")
        setup.proxies.update { $0.set(.clear, from: 1, to: 2) }
        #expect(
            await eventually(seconds: 5) { client.isClosed },
            "a connection that lost bytes is closed once the link is clear")
        #expect(setup.sink.text == "one ")
        await setup.close()
    }

    @Test func aOneWayCutKeepsTheOtherDirection() async throws {
        let setup = try await Setup()
        setup.proxies.update { $0.set(LinkCondition(blocked: true), from: 2, to: 1) }
        let client = try await RawConnection(port: setup.proxyPort, tls: nil)
        try await client.write(Array("to two".utf8))
        #expect(await eventually(seconds: 5) { setup.sink.text == "to two" }, "1 → 2 still works while 2 → 1 is cut")
        await client.close()
        await setup.close()
    }

    @Test func aSlowLinkDeliversLateAndInOrder() async throws {
        let setup = try await Setup()
        setup.proxies.update { $0.set(LinkCondition(delayMilliseconds: 150, jitterMilliseconds: 100), from: 1, to: 2) }
        let client = try await RawConnection(port: setup.proxyPort, tls: nil)
        let sent = DispatchTime.now().uptimeNanoseconds
        for index in 0..<20 { try await client.write(Array("\(index % 10)".utf8)) }
        #expect(await eventually(seconds: 5) { setup.sink.text.count == 20 })
        #expect(setup.sink.text == "01234567890123456789", "order kept: \(setup.sink.text)")
        let firstAt = try #require(setup.sink.received.withLock { $0.firstAt })
        #expect(firstAt - sent >= 150_000_000, "the first byte waited the delay: \(Double(firstAt - sent) / 1e6) ms")
        await client.close()
        await setup.close()
    }
}
