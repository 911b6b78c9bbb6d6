import Sealing
import Synchronization

/// The usable data keys at one moment; immutable, swapped as a whole when the ring changes.
final class KeySet: Sendable {
    let active: DataKey
    let keys: [UInt32: DataKey]
    let retired: Set<UInt32>

    init(active: DataKey, keys: [UInt32: DataKey], retired: Set<UInt32>) {
        precondition(keys[active.id] === active, "the active key must be among the usable keys")
        self.active = active
        self.keys = keys
        self.retired = retired
    }

    func lookup(_ id: UInt32) -> DataKeyLookup {
        // Most values are sealed under the active key: skip hashing for them.
        if id == active.id { return .available(active) }
        if let key = keys[id] { return .available(key) }
        return retired.contains(id) ? .retired : .unknown
    }
}

/// The key hierarchy of one store: data keys (which seal values) wrapped by the master key, an
/// index key for keyed-hash lookups, and the persisted `KeyRingState`.
///
/// Records in the `keyring` column family, each wrapped by the master key with a context that
/// names the record, so records cannot be swapped for one another:
///   "state"        → `KeyRingState`
///   "dk/" + id     → 32 bytes of data key `id` (id: 4 bytes big-endian)
///   "index-key"    → 32 bytes of the index key
final class KeyRing: Sendable {
    static let stateRecord = Array("state".utf8)
    static let indexKeyRecord = Array("index-key".utf8)
    static let stateContext = Array("crm.keyring.state.v1".utf8)
    static let indexKeyContext = Array("crm.keyring.index-key.v1".utf8)

    static func dataKeyRecord(_ id: UInt32) -> [UInt8] { Array("dk/".utf8) + KeyEncoding.bigEndian(id) }
    static func dataKeyContext(_ id: UInt32) -> [UInt8] {
        Array("crm.keyring.data-key.v1/".utf8) + KeyEncoding.bigEndian(id)
    }

    struct Contents: Sendable {
        var state: KeyRingState
        var provider: any MasterKeyProvider
        var keySet: KeySet
    }

    private let contents: Mutex<Contents>
    /// Key for keyed-hash lookup tokens; stable for the life of the store.
    let indexKey: SymmetricKey

    private init(contents: Contents, indexKey: SymmetricKey) {
        self.contents = Mutex(contents)
        self.indexKey = indexKey
    }

    var keySet: KeySet { contents.withLock { $0.keySet } }
    var current: Contents { contents.withLock { $0 } }

    /// Installs a new in-memory state after it has been durably written.
    func install(_ new: Contents) {
        precondition(
            (try? new.state.checkInvariants()) != nil, "installing a key ring state that breaks its invariants")
        precondition(new.keySet.active.id == new.state.activeKeyID, "in-memory active key differs from the state")
        contents.withLock { $0 = new }
    }

    // MARK: - Loading

    /// Loads the ring, or creates it in an empty store. Refuses a store with data and no ring.
    static func load(database: RocksDatabase, provider: any MasterKeyProvider) throws -> (ring: KeyRing, created: Bool)
    {
        guard let sealedState = try read(database, stateRecord) else {
            return (try create(database: database, provider: provider), true)
        }
        let state = try KeyRingState.decode(try unwrap(sealedState, context: stateContext, provider: provider))
        var keys: [UInt32: DataKey] = [:]
        for id in state.liveKeyIDs {
            guard let wrapped = try read(database, dataKeyRecord(id)) else {
                throw StorageError.keyRingCorrupt("data key \(id) is listed as live but its record is missing")
            }
            keys[id] = try unwrapDataKey(id: id, wrapped: wrapped, provider: provider)
        }
        guard let wrappedIndexKey = try read(database, indexKeyRecord) else {
            throw StorageError.keyRingCorrupt("the index key record is missing")
        }
        var indexBytes = try unwrap(wrappedIndexKey, context: indexKeyContext, provider: provider)
        defer { scrub(&indexBytes) }
        guard indexBytes.count == SymmetricKey.byteCount else {
            throw StorageError.keyRingCorrupt("index key has wrong length")
        }
        let keySet = KeySet(active: keys[state.activeKeyID]!, keys: keys, retired: Set(state.retiredKeyIDs))
        let ring = KeyRing(
            contents: Contents(state: state, provider: provider, keySet: keySet),
            indexKey: SymmetricKey(copying: indexBytes))
        return (ring, false)
    }

    private static func create(database: RocksDatabase, provider: any MasterKeyProvider) throws -> KeyRing {
        for family in ColumnFamily.allCases {
            let iterator = database.makeIterator(family, snapshot: nil, lower: nil, upper: nil)
            iterator.seekToFirst()
            try iterator.checkError()
            if iterator.isValid { throw StorageError.keyRingMissing(path: database.path) }
        }
        let firstKey = DataKey(id: 1, key: try sealing { try SymmetricKey.generate() })
        let indexKey = try sealing { try SymmetricKey.generate() }
        let state = KeyRingState.initial(firstKeyID: firstKey.id)
        let batch = RocksBatch(database: database)
        batch.put(
            .keyring, key: dataKeyRecord(firstKey.id),
            value: try wrap(firstKey.material, context: dataKeyContext(firstKey.id), provider: provider))
        batch.put(
            .keyring, key: indexKeyRecord, value: try wrap(indexKey, context: indexKeyContext, provider: provider))
        batch.put(.keyring, key: stateRecord, value: try sealState(state, provider: provider))
        try database.write(batch, durability: .synced)
        let keySet = KeySet(active: firstKey, keys: [firstKey.id: firstKey], retired: [])
        return KeyRing(contents: Contents(state: state, provider: provider, keySet: keySet), indexKey: indexKey)
    }

    private static func read(_ database: RocksDatabase, _ record: [UInt8]) throws -> [UInt8]? {
        try record.withUnsafeBytes { key in try database.withValue(.keyring, key) { $0.map { Array($0) } } }
    }

    // MARK: - Wrapping

    static func sealState(_ state: KeyRingState, provider: any MasterKeyProvider) throws -> [UInt8] {
        try state.checkInvariants()
        return try state.encode().withUnsafeBytes { bytes in
            try masterKey { try provider.wrap(bytes, context: stateContext) }
        }
    }

    static func wrap(_ key: SymmetricKey, context: [UInt8], provider: any MasterKeyProvider) throws -> [UInt8] {
        try key.withUnsafeBytes { bytes in try masterKey { try provider.wrap(bytes, context: context) } }
    }

    static func unwrap(_ wrapped: [UInt8], context: [UInt8], provider: any MasterKeyProvider) throws -> [UInt8] {
        try masterKey { try provider.unwrap(wrapped, context: context) }
    }

    static func unwrapDataKey(id: UInt32, wrapped: [UInt8], provider: any MasterKeyProvider) throws -> DataKey {
        var material = try unwrap(wrapped, context: dataKeyContext(id), provider: provider)
        defer { scrub(&material) }
        guard material.count == SymmetricKey.byteCount else {
            throw StorageError.keyRingCorrupt("data key \(id) has \(material.count) bytes")
        }
        return DataKey(id: id, key: SymmetricKey(copying: material))
    }
}

/// Runs a master-key operation, reporting its failure as a storage error.
func masterKey<R>(_ body: () throws -> R) throws -> R {
    do { return try body() } catch let error as MasterKeyError { throw StorageError.masterKey(error) }
}

/// Runs a sealing primitive, reporting its failure as a storage error.
func sealing<R>(_ body: () throws -> R) throws -> R {
    do { return try body() } catch let error as SealingError { throw StorageError.sealing(error) }
}
