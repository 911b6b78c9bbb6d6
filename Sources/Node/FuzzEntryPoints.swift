import Foundation
import GRPCCore

/// The front's JSON surface for the fuzzing harnesses: any body either decodes into a request
/// or is refused with INVALID_ARGUMENT (never another error, never a trap), and an error reply
/// for any message is valid JSON.
@_spi(Fuzzing) public enum FrontFuzzing {
    public static func json(_ bytes: [UInt8]) {
        let body = Data(bytes)
        decodeOrRefuse(FrontJSON.GetRequest.self, body) { try FrontJSON.consistency($0.consistency) }
        decodeOrRefuse(FrontJSON.RangeRequest.self, body) { try FrontJSON.consistency($0.consistency) }
        decodeOrRefuse(FrontJSON.PutRequest.self, body) { _ = FrontJSON.writeSession($0.session) }
        decodeOrRefuse(FrontJSON.DeleteRequest.self, body) { _ = FrontJSON.writeSession($0.session) }
        decodeOrRefuse(FrontJSON.CompareAndSwapRequest.self, body) { _ = FrontJSON.writeSession($0.session) }
        decodeOrRefuse(FrontJSON.CloseSessionRequest.self, body) { _ in }
        let reply = FrontHTTPAPI.error(
            RPCError(code: .invalidArgument, message: String(decoding: bytes, as: UTF8.self)))
        precondition((try? JSONSerialization.jsonObject(with: reply.body)) != nil, "an error reply is not JSON")
    }

    private static func decodeOrRefuse<T: Decodable>(_ type: T.Type, _ body: Data, then use: (T) throws -> Void) {
        do {
            try use(try FrontHTTPAPI.decode(type, body))
        } catch let error as RPCError {
            precondition(error.code == .invalidArgument, "a bad body answered \(error.code), not INVALID_ARGUMENT")
        } catch {
            preconditionFailure("a bad body threw \(error), not an RPCError")
        }
    }
}
