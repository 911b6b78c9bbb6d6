/// The persisted state of the key ring: which data keys exist, which one seals new writes, and
/// how far a re-seal pass has come. Stored wrapped by the master key in the keyring family.
struct KeyRingState: Equatable, Sendable {
    static let formatVersion: UInt8 = 1
    /// Retired ids are remembered (to report "retired" rather than "unknown") up to this many.
    static let maxRememberedRetired = 4096
    static let maxLiveKeys = 1024

    /// Seals every new write.
    var activeKeyID: UInt32
    /// The id the next generated key receives; ids are never reused.
    var nextKeyID: UInt32
    /// Keys whose wrapped material is stored (active plus draining), ascending.
    var liveKeyIDs: [UInt32]
    /// Keys being moved out by the re-seal pass; retired once the pass completes.
    var drainingKeyIDs: [UInt32]
    var retiredKeyIDs: [UInt32]
    /// Present while a re-seal pass is running or waiting to retire its keys.
    var reseal: ResealCursor?

    struct ResealCursor: Equatable, Sendable {
        /// The family being scanned.
        var family: ColumnFamily
        /// The last key of `family` already handled; nil = start of the family.
        var afterKey: [UInt8]?
        var scanned: UInt64 = 0
        var resealed: UInt64 = 0
        /// Values under a draining key that could not be opened (corrupt); their keys are not retired.
        var unreadable: UInt64 = 0
        /// The whole keyspace has been scanned; the draining keys await retirement.
        var passComplete = false
    }

    static func initial(firstKeyID: UInt32) -> KeyRingState {
        KeyRingState(
            activeKeyID: firstKeyID, nextKeyID: firstKeyID + 1, liveKeyIDs: [firstKeyID],
            drainingKeyIDs: [], retiredKeyIDs: [], reseal: nil)
    }

    /// Holds after every transition; checked before every write of the state and after every read.
    func checkInvariants() throws {
        func require(_ condition: Bool, _ message: String) throws {
            if !condition { throw StorageError.keyRingCorrupt("invariant violated: \(message)") }
        }
        try require(liveKeyIDs.contains(activeKeyID), "active key \(activeKeyID) is not live")
        try require(
            liveKeyIDs == liveKeyIDs.sorted() && Set(liveKeyIDs).count == liveKeyIDs.count,
            "live ids unsorted or repeated")
        try require(Set(drainingKeyIDs).isSubset(of: liveKeyIDs), "a draining key is not live")
        try require(!drainingKeyIDs.contains(activeKeyID), "the active key is draining")
        try require(Set(liveKeyIDs).count == drainingKeyIDs.count + 1, "live keys other than active and draining")
        try require(Set(retiredKeyIDs).isDisjoint(with: liveKeyIDs), "a retired key is live")
        try require(liveKeyIDs.allSatisfy { $0 != 0 && $0 < nextKeyID }, "a key id is 0 or not below nextKeyID")
        try require(drainingKeyIDs.isEmpty == (reseal == nil), "draining keys without a re-seal pass, or the reverse")
    }

    func encode() -> [UInt8] {
        var writer = ByteWriter()
        writer.u8(Self.formatVersion)
        writer.u32(activeKeyID)
        writer.u32(nextKeyID)
        writer.u32Array(liveKeyIDs)
        writer.u32Array(drainingKeyIDs)
        writer.u32Array(retiredKeyIDs)
        if let reseal {
            writer.u8(1)
            writer.u8(reseal.family.rawValue)
            writer.u8(reseal.afterKey == nil ? 0 : 1)
            writer.lengthPrefixed(reseal.afterKey ?? [])
            writer.u64(reseal.scanned)
            writer.u64(reseal.resealed)
            writer.u64(reseal.unreadable)
            writer.u8(reseal.passComplete ? 1 : 0)
        } else {
            writer.u8(0)
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) throws -> KeyRingState {
        var reader = ByteReader(bytes, what: "key ring state")
        let version = try reader.u8()
        guard version == formatVersion else { throw StorageError.keyRingCorrupt("unknown state format \(version)") }
        var state = KeyRingState(
            activeKeyID: try reader.u32(), nextKeyID: try reader.u32(),
            liveKeyIDs: try reader.u32Array(maximum: maxLiveKeys),
            drainingKeyIDs: try reader.u32Array(maximum: maxLiveKeys),
            retiredKeyIDs: try reader.u32Array(maximum: maxRememberedRetired), reseal: nil)
        if try reader.u8() == 1 {
            guard let family = ColumnFamily(rawValue: try reader.u8()) else {
                throw StorageError.keyRingCorrupt("re-seal cursor names an unknown column family")
            }
            let hasKey = try reader.u8() == 1
            let key = try reader.lengthPrefixed(maximum: StorageLimits.maxKeyBytes)
            state.reseal = ResealCursor(
                family: family, afterKey: hasKey ? key : nil, scanned: try reader.u64(),
                resealed: try reader.u64(), unreadable: try reader.u64(), passComplete: try reader.u8() == 1)
        }
        try reader.expectEnd()
        try state.checkInvariants()
        return state
    }
}
