import CRMProto
import Foundation
import GRPCCore

/// The HTTP/JSON surface of the front: `POST /v1/kv/{get,range,put,delete,cas}`,
/// `POST /v1/session/{open,close}`, `GET /v1/cluster`. Keys and values are base64 (they are
/// bytes); every answer carries the header of the member that made it; errors are
/// `{"error": {"code", "message", "retry_after_ms"?}}` with a matching HTTP status.
enum FrontJSON {
    struct Session: Codable, Sendable {
        var id: UInt64
        var sequence: UInt64
    }

    struct Header: Codable, Sendable {
        var memberID: UInt64
        var term: UInt64
        var appliedIndex: UInt64
        var leaderID: UInt64

        init(_ header: Crm_V1_ResponseHeader) {
            memberID = header.memberID
            term = header.term
            appliedIndex = header.appliedIndex
            leaderID = header.leaderID
        }

        enum CodingKeys: String, CodingKey {
            case term
            case memberID = "member_id"
            case appliedIndex = "applied_index"
            case leaderID = "leader_id"
        }
    }

    struct GetRequest: Codable, Sendable {
        var key: Data
        var consistency: String?
    }

    struct GetResponse: Codable, Sendable {
        var header: Header
        var found: Bool
        var value: Data?
    }

    struct RangeRequest: Codable, Sendable {
        var from: Data?
        var to: Data?
        var limit: UInt32?
        var consistency: String?
    }

    struct Pair: Codable, Sendable {
        var key: Data
        var value: Data
    }

    struct RangeResponse: Codable, Sendable {
        var header: Header
        var pairs: [Pair]
        var more: Bool
    }

    struct PutRequest: Codable, Sendable {
        var key: Data
        var value: Data
        var session: Session?
    }

    struct DeleteRequest: Codable, Sendable {
        var key: Data
        var session: Session?
    }

    struct CompareAndSwapRequest: Codable, Sendable {
        var key: Data
        var expectAbsent: Bool?
        var expected: Data?
        var delete: Bool?
        var value: Data?
        var session: Session?

        enum CodingKeys: String, CodingKey {
            case key, expected, delete, value, session
            case expectAbsent = "expect_absent"
        }
    }

    struct WriteResponse: Codable, Sendable {
        var header: Header
        var existed: Bool?
        var swapped: Bool?
    }

    struct OpenSessionResponse: Codable, Sendable {
        var header: Header
        var sessionID: UInt64

        enum CodingKeys: String, CodingKey {
            case header
            case sessionID = "session_id"
        }
    }

    struct CloseSessionRequest: Codable, Sendable {
        var sessionID: UInt64

        enum CodingKeys: String, CodingKey { case sessionID = "session_id" }
    }

    struct ErrorBody: Codable, Sendable {
        struct Detail: Codable, Sendable {
            var code: String
            var message: String
            var retryAfterMilliseconds: UInt64?
            /// True when the request certainly did not take effect (safe to send again anywhere).
            /// Absent on an error of a write: its outcome is unknown (resend it only in a session).
            var refused: Bool?
            /// The leader the answering member knows of, when it named one.
            var leaderID: UInt64?

            enum CodingKeys: String, CodingKey {
                case code, message, refused
                case retryAfterMilliseconds = "retry_after_ms"
                case leaderID = "leader_id"
            }
        }

        var error: Detail
    }

    /// A member as the front routes by it (`GET /v1/cluster`).
    struct MemberView: Codable, Sendable {
        var id: UInt64
        var readable: Bool
        var ejected: String?
        var leader: Bool
        var health: String?
        var reasons: [String]
        var alarms: [String]
        var latencyMilliseconds: Double
        var inFlight: Int
        var pollRoundTripMicroseconds: UInt64?

        enum CodingKeys: String, CodingKey {
            case id, readable, ejected, leader, health, reasons, alarms
            case latencyMilliseconds = "latency_ms"
            case inFlight = "in_flight"
            case pollRoundTripMicroseconds = "poll_rtt_us"
        }
    }

    struct ClusterView: Codable, Sendable {
        var front: UInt64
        var leader: UInt64
        var members: [MemberView]
        var sessions: Int
    }

    static func consistency(_ text: String?) throws -> Crm_V1_ReadConsistency {
        switch text ?? "linearizable" {
        case "linearizable": return .linearizable
        case "serializable": return .serializable
        default:
            throw RPCError(code: .invalidArgument, message: "consistency must be \"linearizable\" or \"serializable\"")
        }
    }

    static func writeSession(_ session: Session?) -> Crm_V1_WriteSession? {
        session.map { session in
            var proto = Crm_V1_WriteSession()
            proto.sessionID = session.id
            proto.sequence = session.sequence
            return proto
        }
    }

    /// The HTTP status for a gRPC status code.
    static func httpStatus(_ error: RPCError) -> Int {
        switch error.code {
        case .invalidArgument, .outOfRange: return 400
        case .unauthenticated: return 401
        case .permissionDenied: return 403
        case .notFound: return 404
        case .failedPrecondition, .aborted, .alreadyExists: return 409
        case .resourceExhausted: return RefusalMetadata.alarm(error) == "NOSPACE" ? 507 : 429
        case .unimplemented: return 501
        case .unavailable: return 503
        case .deadlineExceeded: return 504
        default: return 500
        }
    }

    static func codeName(_ code: RPCError.Code) -> String {
        switch code {
        case .cancelled: return "CANCELLED"
        case .unknown: return "UNKNOWN"
        case .invalidArgument: return "INVALID_ARGUMENT"
        case .deadlineExceeded: return "DEADLINE_EXCEEDED"
        case .notFound: return "NOT_FOUND"
        case .alreadyExists: return "ALREADY_EXISTS"
        case .permissionDenied: return "PERMISSION_DENIED"
        case .resourceExhausted: return "RESOURCE_EXHAUSTED"
        case .failedPrecondition: return "FAILED_PRECONDITION"
        case .aborted: return "ABORTED"
        case .outOfRange: return "OUT_OF_RANGE"
        case .unimplemented: return "UNIMPLEMENTED"
        case .internalError: return "INTERNAL"
        case .unavailable: return "UNAVAILABLE"
        case .dataLoss: return "DATA_LOSS"
        case .unauthenticated: return "UNAUTHENTICATED"
        default: return "UNKNOWN"
        }
    }
}
