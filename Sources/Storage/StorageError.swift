import Sealing

/// Every way a storage call can fail. Reads that fail never return bytes.
public enum StorageError: Error, CustomStringConvertible {
    /// A stored value failed verification (altered, truncated, moved, sealed with a wrong or
    /// unknown key). The value is not returned.
    case unreadable(family: ColumnFamily, key: [UInt8], reason: SealFailure)
    /// RocksDB itself detected corruption (block checksum, bad SST or WAL).
    case corruption(family: ColumnFamily?, key: [UInt8]?, message: String)
    /// Any other RocksDB failure (I/O error, no space, ...).
    case rocksdb(operation: String, message: String)
    case invalidArgument(String)
    /// The directory holds data but no key ring: these files cannot be opened or were tampered with.
    case keyRingMissing(path: String)
    case keyRingCorrupt(String)
    case masterKey(MasterKeyError)
    case sealing(SealingError)
    case closed

    /// Names the column family, never the key: keys may hold personal data, and this text
    /// reaches logs, alarms, health endpoints and clients. `crmctl verify` (admin API) lists the
    /// damaged keys.
    public var description: String {
        switch self {
        case .unreadable(let family, _, let reason):
            return "a value in \(family) is unreadable: \(reason). It was not returned; "
                + "run `crmctl verify` to list all damage and restore the member from a healthy replica or backup"
        case .corruption(let family, _, let message):
            let place = family.map { "\($0)" } ?? "database"
            return "RocksDB detected corruption in \(place): \(message). Run `crmctl verify`; restore the member "
                + "from a healthy replica or backup"
        case .rocksdb(let operation, let message):
            return "RocksDB \(operation) failed: \(message)"
        case .invalidArgument(let message):
            return message
        case .keyRingMissing(let path):
            return "\(path) holds data but no key ring; refusing to open. The directory was not created by "
                + "this engine, or its key ring was deleted; restore it from a backup"
        case .keyRingCorrupt(let message):
            return "key ring is corrupt: \(message)"
        case .masterKey(let error):
            return error.description
        case .sealing(let error):
            return error.description
        case .closed:
            return "the storage engine is closed"
        }
    }
}
