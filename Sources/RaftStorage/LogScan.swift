import Raft
import Storage

/// The check of the whole stored log when it is opened: every entry after the snapshot, in
/// order, must open (the engine verifies its seal), decode, name its own index, follow the one
/// before it, and not lower the term. The scan stops at the first entry that does not.
struct LogScan {
    var terms: [UInt64] = []
    /// The first index that failed, and why.
    var problem: (index: UInt64, reason: String)?

    static func run(engine: StorageEngine, after snapshot: SnapshotMetadata, cache: inout EntryCache) throws -> LogScan
    {
        var scan = LogScan()
        var expected = snapshot.index + 1
        var previousTerm = snapshot.term
        var range = KeyRange(from: LogKeys.entry(expected), to: LogKeys.afterAllEntries)
        var recent: [Entry] = []
        var recentBytes = 0
        // A page that meets an unreadable value returns nothing; the entries before it are
        // then read again, up to it, and the problem recorded at the unreadable one.
        var unreadable: (index: UInt64, reason: String)?
        pages: while true {
            let page: ScanPage
            do {
                page = try engine.scan(.raftLog, range, limit: 1024)
            } catch StorageError.unreadable(_, let key, let reason) {
                let index = LogKeys.index(ofEntryKey: key) ?? expected
                if index > expected && unreadable == nil {
                    unreadable = (index, "entry \(index) fails verification: \(reason)")
                    range = KeyRange(from: range.lower, to: LogKeys.entry(index))
                    continue
                }
                scan.problem = (expected, "entry \(index) fails verification: \(reason)")
                break
            } catch let error as StorageError {
                scan.problem = (expected, "the log cannot be read from entry \(expected): \(error)")
                break
            }
            for item in page.entries {
                guard let index = LogKeys.index(ofEntryKey: item.key) else {
                    scan.problem = (expected, "a key of \(item.key.count) bytes in the log")
                    break pages
                }
                guard index == expected else {
                    scan.problem = (expected, "entry \(expected) is missing (the next stored entry is \(index))")
                    break pages
                }
                guard let entry = RecordCoding.decodeEntry(item.value), entry.index == index else {
                    scan.problem = (index, "entry \(index) opens but does not decode as entry \(index)")
                    break pages
                }
                guard entry.term >= previousTerm else {
                    scan.problem = (
                        index, "entry \(index) has term \(entry.term), below the term \(previousTerm) before it"
                    )
                    break pages
                }
                scan.terms.append(entry.term)
                previousTerm = entry.term
                expected += 1
                recent.append(entry)
                recentBytes += entry.sizeBytes
                // Keep about the cache's worth of the newest entries while scanning.
                if recentBytes > 2 * cache.capacityBytes + (1 << 20) {
                    recent.removeFirst(recent.count / 2)
                    recentBytes = recent.reduce(0) { $0 + $1.sizeBytes }
                }
            }
            guard let resume = page.resume else {
                if let unreadable {
                    scan.problem =
                        expected == unreadable.index
                        ? unreadable
                        : (
                            expected,
                            "entry \(expected) is missing (the next stored entry, \(unreadable.index), fails verification)"
                        )
                }
                break
            }
            range = resume
        }
        if let problem = scan.problem {
            recent.removeAll { $0.index >= problem.index }
        }
        cache.store(recent)
        return scan
    }
}
