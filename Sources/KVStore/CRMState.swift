import BinaryCoding
import Storage

/// Where the CRM keeps its state: under `c/` in the state machine's family, written only by
/// transactions. Keys inside it are given relative to the prefix.
public enum CRMKeys {
    /// Where CRM state starts among the state machine's absolute keys.
    public static let prefix = Array("c/".utf8)
    /// The version of the CRM key set in use (a plain big-endian u64; absent: none yet).
    public static let keySetInUse = Array("sys/keyset".utf8)

    static func absolute(_ key: [UInt8]) -> [UInt8] { prefix + key }
}

/// A value under the CRM prefix as it is stored: plain, or stamped with the version (log index)
/// and log time of the transaction that wrote it.
public struct CRMValue: Equatable, Sendable {
    /// The log index of the transaction that wrote it (nil: written plain).
    public var version: UInt64?
    /// The log time of that transaction (0 when plain).
    public var updatedAtMillis: UInt64
    public var payload: [UInt8]

    public init(version: UInt64?, updatedAtMillis: UInt64, payload: [UInt8]) {
        precondition(version != 0, "version 0 is never stamped (log indexes start at 1)")
        self.version = version
        self.updatedAtMillis = updatedAtMillis
        self.payload = payload
    }

    private static let plainForm: UInt8 = 0
    private static let stampedForm: UInt8 = 1

    var stored: [UInt8] {
        var writer = BinaryWriter(capacity: payload.count + 17)
        if let version {
            writer.u8(Self.stampedForm); writer.u64(version); writer.u64(updatedAtMillis)
        } else {
            writer.u8(Self.plainForm)
        }
        writer.raw(payload)
        return writer.bytes
    }

    /// A value as stored (nil: not a CRM value's form).
    public init?(stored bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        switch reader.u8() {
        case Self.plainForm?:
            self.init(version: nil, updatedAtMillis: 0, payload: reader.rest())
        case Self.stampedForm?:
            guard let version = reader.u64(), version != 0, let time = reader.u64() else { return nil }
            self.init(version: version, updatedAtMillis: time, payload: reader.rest())
        default:
            return nil
        }
    }

    /// The value of a stored CRM record, or an error naming the key's family (never the key).
    static func decode(_ bytes: [UInt8], key: [UInt8]) throws -> CRMValue {
        guard let value = CRMValue(stored: bytes) else {
            throw StorageError.corruption(
                family: .stateMachine, key: key, message: "a CRM value does not decode")
        }
        return value
    }
}

extension ReplicatedKV {
    /// The CRM value at `key` (relative to the CRM prefix), or nil. Linearizable once the caller
    /// has waited for the read index.
    public func crmValue(_ key: [UInt8]) throws -> CRMValue? {
        let absolute = CRMKeys.absolute(key)
        return try storage.get(.stateMachine, absolute).map { try CRMValue.decode($0, key: absolute) }
    }

    /// CRM keys in [from, to) (relative to the CRM prefix) in order, at most `limit`; `more`
    /// says whether the range holds further keys.
    public func crmScan(
        from: [UInt8], to: [UInt8], limit: Int
    ) throws -> (entries: [(key: [UInt8], value: CRMValue)], more: Bool) {
        precondition(limit >= 1 && limit <= KVLimits.maxRangeLimit, "scan limit \(limit)")
        let page = try storage.scan(
            .stateMachine, KeyRange(from: CRMKeys.absolute(from), to: CRMKeys.absolute(to)), limit: limit)
        let entries = try page.entries.map { entry in
            (
                key: Array(entry.key.dropFirst(CRMKeys.prefix.count)),
                value: try CRMValue.decode(entry.value, key: entry.key)
            )
        }
        return (entries, page.resume != nil)
    }
}
