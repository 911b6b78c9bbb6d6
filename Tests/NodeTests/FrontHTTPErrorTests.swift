import Foundation
import GRPCCore
import Testing

@testable import Node

/// The front's HTTP error body tells a refusal (not applied, safe to resend anywhere) from an
/// outcome-unknown error, as the gRPC trailers do, and decoding errors speak of the client's
/// JSON, not of Swift's types.
@Suite struct FrontHTTPErrorTests {
    private func detail(_ reply: FrontHTTPAPI.Reply) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any]
        return try #require(object?["error"] as? [String: Any])
    }

    @Test func aRefusalIsMarkedAndAnUnknownOutcomeIsNot() throws {
        var refused = Metadata()
        refused.addString("1", forKey: RefusalMetadata.refused)
        refused.addString("3", forKey: RefusalMetadata.leader)
        let notApplied = FrontHTTPAPI.error(
            RPCError(code: .unavailable, message: "this member does not lead", metadata: refused))
        #expect(notApplied.status == 503)
        #expect(try detail(notApplied)["refused"] as? Bool == true)
        #expect(try detail(notApplied)["leader_id"] as? Int == 3)

        let unknown = FrontHTTPAPI.error(
            RPCError(code: .unavailable, message: "outcome unknown: an earlier attempt may have applied"))
        #expect(unknown.status == 503)
        #expect(try detail(unknown)["refused"] == nil && detail(unknown)["leader_id"] == nil)
        #expect(FrontHTTPAPI.error(RPCError(code: .deadlineExceeded, message: "late")).status == 504)
        #expect(FrontHTTPAPI.error(RPCError(code: .aborted, message: "leader changed")).status == 409)
    }

    @Test func decodingErrorsNameTheFieldNotSwift() throws {
        let cases: [(String, String)] = [
            (#"{"key": 5}"#, #""key" has the wrong type"#),
            (#"{"key": "%%%"}"#, #""key" is not valid"#),
            (
                #"{"key": "eA==", "value": "eA==", "session": {"id": true, "sequence": 1}}"#,
                #""session.id" has the wrong type"#
            ),
            ("[1, 2]", "must be an object"),
            ("{", "not valid JSON"),
        ]
        for (json, expected) in cases {
            do {
                _ = try FrontHTTPAPI.decode(FrontJSON.PutRequest.self, Data(json.utf8))
                Issue.record("\(json) decoded")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument && error.message.contains(expected), "\(json): \(error.message)")
                #expect(
                    !error.message.contains("DecodingError") && !error.message.contains("Swift"),
                    "\(json): \(error.message)")
            }
        }
    }
}
