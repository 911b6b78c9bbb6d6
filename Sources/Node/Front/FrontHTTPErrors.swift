import Foundation
import GRPCCore
import NIOCore
import NIOHTTP1

/// Answers a request the HTTP parser refused (a header over the parser's limit, bad framing)
/// with the front's JSON error shape instead of an empty 400, then lets the connection close:
/// `431` for headers too large, `400` otherwise. Only when no other response is under way (the
/// parser's error ends the connection, so there is no later chance).
final class FrontHTTPProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responding = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !responding {
            let (status, message) = Self.describe(parserError)
            let reply = FrontHTTPAPI.error(RPCError(code: .invalidArgument, message: message), status: status)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(reply.body.count)")
            headers.add(name: "Connection", value: "close")
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: .http1_1, status: HTTPResponseStatus(statusCode: status),
                            headers: headers))), promise: nil)
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: reply.body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200: responding = true
        case .end: responding = false
        default: break
        }
        context.write(data, promise: promise)
    }

    static func describe(_ error: HTTPParserError) -> (status: Int, message: String) {
        switch error {
        case .headerOverflow:
            return (431, "the request's headers are over the front's limit of 80 KiB; send fewer or shorter headers")
        case .invalidMethod:
            return (
                400,
                "the request method is not valid HTTP; the API is POST /v1/kv/{get,range,put,delete,cas}, POST /v1/session/{open,close}, GET /v1/cluster"
            )
        default:
            return (400, "the request is not valid HTTP/1.1; the front speaks HTTP/1.1 with JSON bodies")
        }
    }
}
