/// Why bytes from a connection were refused. A decoder that throws has consumed nothing it
/// could not account for; the connection that sent the bytes is closed, nothing else is harmed.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(UInt16)
    case unsupportedVersion(UInt8)
    case unknownFrameType(UInt8)
    /// The header announces a payload larger than the connection's limit.
    case frameTooLarge(bytes: UInt32, limit: Int)
    /// A field runs past the end of its frame, or a count or length is beyond its limit.
    case malformed(String)

    public var description: String {
        switch self {
        case .badMagic(let magic):
            return "not a crm frame (magic 0x\(String(magic, radix: 16))): the peer does not speak this protocol"
        case .unsupportedVersion(let version):
            return
                "frame version \(version) is not supported (this node speaks version \(FrameHeader.version)); upgrade the older member"
        case .unknownFrameType(let type):
            return "unknown frame type \(type)"
        case .frameTooLarge(let bytes, let limit):
            return "frame of \(bytes) bytes exceeds the limit of \(limit) bytes"
        case .malformed(let what):
            return "malformed frame: \(what)"
        }
    }
}
