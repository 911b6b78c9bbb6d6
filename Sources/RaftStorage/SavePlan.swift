import Raft
import Storage

/// What one `save` will write, validated against the log as it is before anything is written.
struct SavePlan {
    /// The snapshot that replaces the log's start, if one was received.
    private(set) var installedSnapshot: RecordCoding.StoredSnapshot?
    private var snapshotData: [UInt8] = []
    /// With a snapshot: the terms of stored entries after it that agree with it and stay.
    private(set) var keptTerms: [UInt64] = []
    private let entries: [Entry]
    private let hardState: HardState?
    /// Stored entries to delete: [from, to) in raft_log.
    private var deletions: [(from: [UInt8], to: [UInt8])] = []
    private let previousSnapshot: RecordCoding.StoredSnapshot

    var isEmpty: Bool { installedSnapshot == nil && entries.isEmpty && hardState == nil }

    init(
        current store: DurableLogStore, snapshot: Snapshot?, entries: [Entry], hardState: HardState?
    ) throws(DurableLogError) {
        self.entries = entries
        self.hardState = hardState
        previousSnapshot = store.stored
        var baseFirst = store.firstIndex
        var baseLast = store.lastIndex
        var termAt: (UInt64) -> UInt64? = { store.term(at: $0) }
        if let snapshot {
            let index = snapshot.metadata.index
            guard index > store.stored.metadata.index else {
                throw .invalidRequest(
                    "snapshot at \(index) is not newer than the stored one at \(store.stored.metadata.index)")
            }
            installedSnapshot = RecordCoding.StoredSnapshot(
                metadata: snapshot.metadata, dataBytes: UInt64(snapshot.data.count),
                chunkCount: DurableLogStore.chunkCount(snapshot.data.count))
            snapshotData = snapshot.data
            if index <= store.lastIndex, store.term(at: index) == snapshot.metadata.term {
                keptTerms = Array(store.terms[Int(index + 1 - store.firstIndex)...])
                deletions.append((LogKeys.entry(0), LogKeys.entry(index + 1)))
            } else {
                deletions.append((LogKeys.entry(0), LogKeys.afterAllEntries))
            }
            baseFirst = index + 1
            baseLast = index + UInt64(keptTerms.count)
            let kept = keptTerms
            let metadata = snapshot.metadata
            termAt = { at in
                if at == metadata.index { return metadata.term }
                guard at > metadata.index, at <= metadata.index + UInt64(kept.count) else { return nil }
                return kept[Int(at - metadata.index - 1)]
            }
        }
        var newLast = baseLast
        if let first = entries.first {
            guard first.index >= baseFirst, first.index <= baseLast + 1, let previousTerm = termAt(first.index - 1)
            else {
                throw .invalidRequest("entries from \(first.index) do not attach to the log \(baseFirst)...\(baseLast)")
            }
            var term = previousTerm
            for (offset, entry) in entries.enumerated() {
                guard entry.index == first.index + UInt64(offset), entry.term >= term, entry.term > 0 else {
                    throw .invalidRequest(
                        "entry \(entry.index) (term \(entry.term)) breaks the sequence after term \(term)")
                }
                term = entry.term
            }
            newLast = first.index + UInt64(entries.count) - 1
            if newLast < baseLast { deletions.append((LogKeys.entry(newLast + 1), LogKeys.entry(baseLast + 1))) }
        }
        if let hardState {
            let floor = installedSnapshot?.metadata.index ?? store.stored.metadata.index
            guard hardState.commit <= max(newLast, floor) else {
                throw .invalidRequest("hard state commit \(hardState.commit) beyond the last index \(newLast)")
            }
        }
    }

    /// The storage batches, in order: snapshot chunks (under the new snapshot's own keys, unused
    /// until its metadata is written), then entries with the metadata and deletions in the first
    /// batch and the hard state in the last. A crash between batches leaves a valid log: a
    /// prefix of the new entries, and the hard state that was there before.
    func batches(store: DurableLogStore) -> [WriteBatch] {
        var batches: [WriteBatch] = []
        if let installed = installedSnapshot {
            batches += store.chunkBatches(snapshotData, snapshotIndex: installed.metadata.index)
        }
        var batch = WriteBatch()
        if let installed = installedSnapshot {
            store.putSnapshotMetadata(installed, replacing: previousSnapshot, into: &batch)
            // The deletion below removes retained entries too.
            batch.delete(.raftState, key: LogKeys.retainedFrom)
        }
        for deletion in deletions { batch.deleteRange(.raftLog, from: deletion.from, to: deletion.to) }
        for entry in entries {
            let value = RecordCoding.encode(entry)
            if !batch.isEmpty && batch.payloadBytes + value.count > DurableLogStore.maxBatchPayloadBytes {
                batches.append(batch)
                batch = WriteBatch()
            }
            batch.put(.raftLog, key: LogKeys.entry(entry.index), value: value)
        }
        if let hardState { batch.put(.raftState, key: LogKeys.hardState, value: RecordCoding.encode(hardState)) }
        batches.append(batch)
        return batches
    }
}
