import BinaryCoding
import KVStore
import Sealing
import Synchronization

/// This member's view of the cluster's CRM keys: its key-encryption key (from its provider, the
/// same on every member and never replicated) and the key sets opened from their replicated
/// records, cached by version (a version's keys never change).
public final class CRMKeyState: Sendable {
    private let kek: Result<any MasterKeyProvider, CRMKeyError>
    private let kv: ReplicatedKV
    private let opened = Mutex<[UInt64: CRMKeySet]>([:])

    /// `kek` is the provider, or why there is none (a missing or refused key file, a KMS down).
    public init(kek: Result<any MasterKeyProvider, CRMKeyError>, kv: ReplicatedKV) {
        self.kek = kek
        self.kv = kv
    }

    public func keyEncryptionKey() throws -> any MasterKeyProvider { try kek.get() }

    /// The version of the key set in use (0: the CRM has none yet).
    public func versionInUse() throws -> UInt64 {
        guard let value = try kv.crmValue(CRMKeys.keySetInUse) else { return 0 }
        var reader = BinaryReader(value.payload)
        guard let version = reader.u64(), reader.isAtEnd else {
            throw CRMKeyError.keySetDamaged(version: 0, reason: "the version in use does not decode")
        }
        return version
    }

    /// The key set in use, opened (nil: the CRM has none yet).
    public func inUse() throws -> CRMKeySet? {
        let version = try versionInUse()
        return version == 0 ? nil : try keySet(version)
    }

    /// Key set `version`, opened from its replicated record on first use.
    public func keySet(_ version: UInt64) throws -> CRMKeySet {
        if let cached = opened.withLock({ $0[version] }) { return cached }
        guard let record = try kv.crmValue(CRMLayout.keySet(version)) else {
            throw CRMKeyError.unknownKeySet(version: version)
        }
        let set = try CRMKeySet.open(record: record.payload, version: version, kek: try kek.get())
        opened.withLock { $0[version] = set }
        return set
    }

    /// The versions of the key sets stored (the one in use, and the one a running re-wrap
    /// retires).
    public func storedVersions() throws -> [UInt64] {
        let prefix = CRMLayout.keySetPrefix
        let page = try kv.crmScan(from: prefix, to: CRMLayout.end(of: prefix), limit: 16)
        return page.entries.compactMap { entry in
            var reader = BinaryReader(Array(entry.key.dropFirst(prefix.count)))
            guard let version = reader.u64(), reader.isAtEnd else { return nil }
            return version
        }
    }

    /// What keeps this member from serving CRM calls, if anything: `wrongKey` or
    /// `keySetDamaged` raise the CRMKEY alarm; `keyUnavailable` makes calls UNAVAILABLE.
    public func problem() -> CRMKeyError? {
        do {
            _ = try kek.get()
            _ = try inUse()
            return nil
        } catch let error as CRMKeyError {
            return error
        } catch {
            return .keyUnavailable("\(error)")
        }
    }
}

/// The transactions that create and rotate the CRM key set. Each is conditioned on the version
/// in use, so that two members proposing at once cannot both succeed.
public enum KeySetChanges {
    /// Creates key set 1 (only while the CRM has none).
    public static func first(kek: any MasterKeyProvider) throws -> (Transaction, CRMKeySet) {
        let set = try CRMKeySet.generate(version: 1)
        let transaction = Transaction(
            conditions: [.keySet(0), .absent(key: CRMLayout.keySet(1))],
            operations: [
                .put(key: CRMLayout.keySet(1), value: try set.record(wrappedBy: kek)),
                .put(key: CRMKeys.keySetInUse, value: u64(1)),
            ])
        return (transaction, set)
    }

    /// Puts a new key set in use for everything sealed from now on, and starts the job that
    /// re-wraps every subject key under it (refused while an earlier job runs).
    public static func rotation(from current: CRMKeySet, kek: any MasterKeyProvider) throws -> (Transaction, CRMKeySet)
    {
        let set = try CRMKeySet.successor(of: current)
        let job = RewrapJob(from: current.version, to: set.version, workspace: CRMLayout.defaultWorkspace, cursor: [])
        let transaction = Transaction(
            conditions: [.keySet(current.version), .absent(key: CRMLayout.rewrapJob)],
            operations: [
                .put(key: CRMLayout.keySet(set.version), value: try set.record(wrappedBy: kek)),
                .put(key: CRMKeys.keySetInUse, value: u64(set.version)),
                .putStamped(key: CRMLayout.rewrapJob, value: job.encoded),
            ])
        return (transaction, set)
    }

    static func u64(_ value: UInt64) -> [UInt8] {
        var writer = BinaryWriter()
        writer.u64(value)
        return writer.bytes
    }
}

/// After a rotation from version `from` to `to`: every subject key still wrapped under `from`
/// is re-wrapped under `to`, a batch per transaction, the cursor saved with each batch (so a
/// restart or a new leader resumes where the last batch ended); the last batch retires `from`.
public struct RewrapJob: Equatable, Sendable {
    public var from: UInt64
    public var to: UInt64
    public var workspace: UInt32
    /// The vault key after which the next batch starts (empty: from the beginning).
    public var cursor: [UInt8]
    /// Subject keys re-wrapped so far (progress for operators).
    public var rewrapped: UInt64 = 0

    public static let batchSize = 128

    var encoded: [UInt8] {
        var writer = BinaryWriter()
        writer.u64(from); writer.u64(to); writer.u32(workspace); writer.blob(cursor); writer.u64(rewrapped)
        return writer.bytes
    }

    init(from: UInt64, to: UInt64, workspace: UInt32, cursor: [UInt8]) {
        self.from = from
        self.to = to
        self.workspace = workspace
        self.cursor = cursor
    }

    /// The job from its record (one written before the count was kept has none: 0).
    init?(encoded bytes: [UInt8]) {
        var reader = BinaryReader(bytes)
        guard let from = reader.u64(), let to = reader.u64(), to == from + 1, let workspace = reader.u32(),
            let cursor = reader.blob(limit: TransactionLimits.maxKeyBytes)
        else { return nil }
        self.init(from: from, to: to, workspace: workspace, cursor: cursor)
        if !reader.isAtEnd {
            guard let count = reader.u64(), reader.isAtEnd else { return nil }
            rewrapped = count
        }
    }

    /// The job in progress, with the version of its record (nil: none).
    public static func current(in kv: ReplicatedKV) throws -> (job: RewrapJob, version: UInt64)? {
        guard let value = try kv.crmValue(CRMLayout.rewrapJob) else { return nil }
        guard let job = RewrapJob(encoded: value.payload), let version = value.version else {
            throw CRMKeyError.keySetDamaged(version: 0, reason: "the re-wrap job record does not decode")
        }
        return (job, version)
    }

    /// The next batch's transaction: re-wrapped keys and the advanced cursor, or, when no key is
    /// left, the retirement of the old version and the end of the job.
    public func nextBatch(jobVersion: UInt64, kv: ReplicatedKV, keys: CRMKeyState) throws -> Transaction {
        let prefix = CRMLayout.vaultPrefix(workspace: workspace)
        let start = cursor.isEmpty ? prefix : cursor + [0]
        let page = try kv.crmScan(from: start, to: CRMLayout.end(of: prefix), limit: Self.batchSize)
        var conditions: [TransactionCondition] = [.keySet(to), .version(key: CRMLayout.rewrapJob, jobVersion)]
        guard let last = page.entries.last else {
            return Transaction(
                conditions: conditions,
                operations: [.delete(key: CRMLayout.keySet(from)), .delete(key: CRMLayout.rewrapJob)])
        }
        let target = try keys.keySet(to)
        var operations: [TransactionOperation] = []
        for (key, value) in page.entries {
            guard SubjectKeys.version(of: value.payload) != to else { continue }
            guard let subject = CRMID(bytes: Array(key.dropFirst(prefix.count))), let version = value.version else {
                throw CRMKeyError.doesNotOpen("a vault entry")
            }
            let subjectKey = try SubjectKeys.unwrap(
                value.payload, subject: subject, workspace: workspace, keySets: { try? keys.keySet($0) })
            conditions.append(.version(key: key, version))
            operations.append(
                .putStamped(
                    key: key,
                    value: try SubjectKeys.wrap(subjectKey, subject: subject, workspace: workspace, under: target)))
        }
        var advanced = self
        advanced.cursor = last.key
        advanced.rewrapped += UInt64(operations.count)
        operations.append(.putStamped(key: CRMLayout.rewrapJob, value: advanced.encoded))
        return Transaction(conditions: conditions, operations: operations)
    }
}
