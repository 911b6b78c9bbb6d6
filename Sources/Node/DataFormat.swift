import Storage

/// The format of everything a member stores (the sealed engine's values, the Raft log, the state
/// machine's records), as one number in the store's metadata. A binary opens a store of its own
/// format or an older one (and marks it as its own); it refuses a store a newer binary marked,
/// so that a downgrade across an incompatible format stops at start with the reason, before
/// anything is read or written.
enum DataFormat {
    /// Raised when this binary's stores change in a way an older binary cannot read.
    static let current: UInt32 = 1
    static let key = Array("data-format".utf8)

    struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    /// Checks the store's format and marks it as `current`; answers the format it found (0: none yet).
    @discardableResult
    static func check(_ storage: StorageEngine) throws -> UInt32 {
        let found = try storage.get(.metadata, key).map { bytes -> UInt32 in
            guard bytes.count == 4 else { return .max }
            return bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        }
        if let found, found > current {
            throw Refusal(
                description: found == .max
                    ? "the store's data-format marker does not decode"
                    : "this store was written in data format \(found) by a newer crm-node; this one (\(NodeVersion.current)) reads formats up to \(current). A downgrade across data formats is refused: run the newer binary"
            )
        }
        if found != current {
            var batch = WriteBatch()
            batch.put(.metadata, key: key, value: (0..<4).map { UInt8(truncatingIfNeeded: current >> (24 - 8 * $0)) })
            try storage.write(batch, durability: .synced)
        }
        return found ?? 0
    }
}
