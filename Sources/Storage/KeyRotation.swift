import Logging
import Sealing

/// Where a re-seal pass stands.
public struct ResealProgress: Sendable, Equatable, CustomStringConvertible {
    /// The family being scanned; nil once the whole keyspace has been scanned.
    public let family: ColumnFamily?
    public let scanned: UInt64
    public let resealed: UInt64
    /// Values under a draining key that could not be opened; while non-zero, keys are not retired.
    public let unreadable: UInt64
    /// RocksDB's estimate of the keys in all data families (the scan's approximate total).
    public let estimatedTotal: UInt64
    /// The draining keys still stored (empty once retired).
    public let drainingKeyIDs: [UInt32]

    public var passComplete: Bool { family == nil }
    public var finished: Bool { drainingKeyIDs.isEmpty }

    public var description: String {
        let place =
            family.map { "scanning \($0)" } ?? (finished ? "done" : "scan complete, retiring keys \(drainingKeyIDs)")
        return
            "re-seal \(place): scanned \(scanned) of ~\(estimatedTotal), re-sealed \(resealed), unreadable \(unreadable)"
    }
}

/// The key hierarchy as an operator sees it.
public struct KeyStatus: Sendable, Equatable {
    public let activeKeyID: UInt32
    public let liveKeyIDs: [UInt32]
    public let drainingKeyIDs: [UInt32]
    public let retiredKeyIDs: [UInt32]
    public let masterKeyID: String
}

extension StorageEngine {
    /// Values examined per re-seal step by default: one short exclusive section each.
    public static let defaultResealChunk = 256

    public func keyStatus() -> KeyStatus {
        let current = keyRing.current
        return KeyStatus(
            activeKeyID: current.state.activeKeyID, liveKeyIDs: current.state.liveKeyIDs,
            drainingKeyIDs: current.state.drainingKeyIDs, retiredKeyIDs: current.state.retiredKeyIDs,
            masterKeyID: current.provider.keyID)
    }

    /// Generates a new data key and makes it the one that seals new writes; the previous active
    /// key starts draining. Run the re-seal pass (`resealStep`, `runReseal` or `BackgroundReseal`)
    /// to move old values; drained keys are retired when it completes.
    @discardableResult
    public func rotateDataKey() throws -> UInt32 {
        try keyOperations.withLock { _ in
            let newID = keyRing.current.state.nextKeyID
            guard newID < UInt32.max else { throw StorageError.keyRingCorrupt("data key ids exhausted") }
            let newKey = DataKey(id: newID, key: try sealing { try SymmetricKey.generate() })
            try exclusively {
                let current = keyRing.current
                var state = current.state
                state.drainingKeyIDs = (state.drainingKeyIDs + [state.activeKeyID]).sorted()
                state.liveKeyIDs = (state.liveKeyIDs + [newID]).sorted()
                state.activeKeyID = newID
                state.nextKeyID = newID + 1
                // A pass in progress restarts: it must cover the keyspace for every draining key.
                state.reseal = KeyRingState.ResealCursor(family: ColumnFamily.dataFamilies[0])
                let batch = RocksBatch(database: database)
                batch.put(
                    .keyring, key: KeyRing.dataKeyRecord(newID),
                    value: try KeyRing.wrap(
                        newKey.material, context: KeyRing.dataKeyContext(newID), provider: current.provider))
                batch.put(
                    .keyring, key: KeyRing.stateRecord, value: try KeyRing.sealState(state, provider: current.provider))
                try database.write(batch, durability: .synced)
                var keys = current.keySet.keys
                keys[newID] = newKey
                keyRing.install(
                    .init(
                        state: state, provider: current.provider,
                        keySet: KeySet(active: newKey, keys: keys, retired: current.keySet.retired)))
            }
            logger.notice(
                "data key rotated",
                metadata: [
                    "active_key": "\(newID)",
                    "draining": "\(keyRing.current.state.drainingKeyIDs)",
                ])
            return newID
        }
    }

    /// Where the re-seal pass stands, or nil if none is pending.
    public func resealProgress() throws -> ResealProgress? {
        let state = keyRing.current.state
        guard let cursor = state.reseal else { return nil }
        return try progress(cursor, state: state)
    }

    private func progress(_ cursor: KeyRingState.ResealCursor?, state: KeyRingState) throws -> ResealProgress {
        let total = try ColumnFamily.dataFamilies.reduce(UInt64(0)) { $0 + (try estimatedKeyCount($1)) }
        return ResealProgress(
            family: cursor.flatMap { $0.passComplete ? nil : $0.family }, scanned: cursor?.scanned ?? 0,
            resealed: cursor?.resealed ?? 0, unreadable: cursor?.unreadable ?? 0, estimatedTotal: total,
            drainingKeyIDs: state.drainingKeyIDs)
    }

    /// Re-seals up to `maxItems` values under the active key and records the position durably in
    /// the same atomic write, so a crash resumes where it stopped. Returns nil when no pass is pending.
    @discardableResult
    public func resealStep(maxItems: Int = StorageEngine.defaultResealChunk) throws -> ResealProgress? {
        guard (1...StorageLimits.maxScanEntries).contains(maxItems) else {
            throw StorageError.invalidArgument(
                "re-seal chunk \(maxItems) must be between 1 and \(StorageLimits.maxScanEntries)")
        }
        return try keyOperations.withLock { _ -> ResealProgress? in
            let state = keyRing.current.state
            guard var cursor = state.reseal else { return nil }
            if !cursor.passComplete {
                let draining = Set(state.drainingKeyIDs)
                let found = try whileOpen { try findSealedUnder(draining, cursor: cursor, maxItems: maxItems) }
                cursor = try exclusively { try reseal(found, cursor: cursor, draining: draining) }
                if cursor.passComplete {
                    try whileOpen { try database.syncWAL() }
                    logger.notice(
                        "re-seal pass complete",
                        metadata: [
                            "scanned": "\(cursor.scanned)", "resealed": "\(cursor.resealed)",
                            "unreadable": "\(cursor.unreadable)",
                        ])
                }
            }
            try retireLocked()
            // After retirement the cursor is gone from the state; report the pass's totals.
            let after = keyRing.current.state
            return try progress(after.reseal ?? cursor, state: after)
        }
    }

    /// Runs the pass to the end (or until `progress` returns false); returns the last progress.
    @discardableResult
    public func runReseal(
        chunk: Int = StorageEngine.defaultResealChunk,
        progress: (ResealProgress) -> Bool = { _ in true }
    ) throws -> ResealProgress? {
        var last: ResealProgress?
        while let step = try resealStep(maxItems: chunk) {
            last = step
            if step.finished || !progress(step) { break }
            // Complete, but keys wait for older views or unreadable values: nothing more to do now.
            if step.passComplete { break }
        }
        return last
    }

    private struct ScanChunk {
        var candidates: [[UInt8]] = []
        var lastKey: [UInt8]?
        var scanned: UInt64 = 0
        var undecidable: UInt64 = 0
        var exhausted = false
    }

    /// Finds keys whose stored header names a draining key (headers only; nothing is decrypted).
    private func findSealedUnder(
        _ draining: Set<UInt32>, cursor: KeyRingState.ResealCursor, maxItems: Int
    ) throws -> ScanChunk {
        let lower = cursor.afterKey.map { $0 + [0] } // the smallest key after `afterKey`
        let iterator = database.makeIterator(cursor.family, snapshot: nil, lower: lower, upper: nil)
        iterator.seekToFirst()
        var chunk = ScanChunk()
        while iterator.isValid && chunk.scanned < UInt64(maxItems) {
            let key = Array(iterator.key)
            chunk.scanned += 1
            chunk.lastKey = key
            if let header = try? SealedValue.header(of: iterator.value) {
                if draining.contains(header.keyID) { chunk.candidates.append(key) }
            } else {
                // A damaged header could belong to a draining key: keep the keys until it is repaired.
                chunk.undecidable += 1
                logger.error(
                    "re-seal found an unreadable value header",
                    metadata: [
                        "family": "\(cursor.family)", "key": "\(key.hexString)",
                    ])
            }
            iterator.next()
        }
        try iterator.checkError()
        chunk.exhausted = !iterator.isValid
        return chunk
    }

    /// Under the exclusive gate: re-reads each candidate (a write may have replaced it), re-seals
    /// those still under a draining key, and stores them with the advanced cursor in one batch.
    private func reseal(
        _ chunk: ScanChunk, cursor: KeyRingState.ResealCursor, draining: Set<UInt32>
    ) throws -> KeyRingState.ResealCursor {
        let current = keyRing.current
        let active = current.keySet.active
        let batch = RocksBatch(database: database)
        var next = cursor
        next.scanned += chunk.scanned
        next.unreadable += chunk.undecidable
        for key in chunk.candidates {
            let stored: [UInt8]? = try key.withUnsafeBytes { k in
                try database.withValue(cursor.family, k) { $0.map { Array($0) } }
            }
            guard let stored, let header = try? stored.withUnsafeBytes({ try SealedValue.header(of: $0) }),
                draining.contains(header.keyID)
            else { continue }
            do {
                let plain = try stored.withUnsafeBytes {
                    try openSealed($0, family: cursor.family, key: key, keys: current.keySet)
                }
                batch.put(
                    cursor.family, key: key, value: try sealValue(plain, family: cursor.family, key: key, with: active))
                next.resealed += 1
            } catch let error as StorageError {
                next.unreadable += 1
                logger.error(
                    "re-seal could not open a value",
                    metadata: [
                        "family": "\(cursor.family)", "key": "\(key.hexString)", "error": "\(error)",
                    ])
            }
        }
        if chunk.exhausted {
            let position = ColumnFamily.dataFamilies.firstIndex(of: cursor.family)!
            if position + 1 < ColumnFamily.dataFamilies.count {
                next.family = ColumnFamily.dataFamilies[position + 1]
                next.afterKey = nil
            } else {
                next.passComplete = true
                views.withLock { $0.passCompleted() }
            }
        } else {
            next.afterKey = chunk.lastKey
        }
        var state = current.state
        state.reseal = next
        batch.put(.keyring, key: KeyRing.stateRecord, value: try KeyRing.sealState(state, provider: current.provider))
        try database.write(batch, durability: .buffered)
        keyRing.install(.init(state: state, provider: current.provider, keySet: current.keySet))
        return next
    }

    // MARK: - Retirement

    /// Retires drained keys now if nothing still needs them (used at open).
    func retireDrainedKeys() throws {
        try keyOperations.withLock { _ in try retireLocked() }
    }

    /// Called when a view closes: retire if a retirement was waiting and no key operation runs.
    func retireDrainedKeysIfIdle() {
        _ = keyOperations.withLockIfAvailable { _ in
            do { try retireLocked() } catch {
                logger.error("retiring drained data keys failed; will retry", metadata: ["error": "\(error)"])
            }
        }
    }

    /// With `keyOperations` held: deletes the drained keys' records once the pass is complete,
    /// nothing unreadable was left under them, and no view from before completion is open.
    private func retireLocked() throws {
        let state = keyRing.current.state
        guard let cursor = state.reseal, cursor.passComplete else { return }
        guard cursor.unreadable == 0 else {
            logger.error(
                "keeping draining data keys: values could not be re-sealed; run verify and repair, then rotate again",
                metadata: ["keys": "\(state.drainingKeyIDs)", "unreadable": "\(cursor.unreadable)"])
            return
        }
        let pinning = views.withLock { $0.viewsPinningDrainedKeys }
        if pinning > 0 {
            logger.info(
                "data key retirement waits for open storage views",
                metadata: [
                    "keys": "\(state.drainingKeyIDs)", "views": "\(pinning)",
                ])
            return
        }
        let retired = state.drainingKeyIDs
        try exclusively {
            let current = keyRing.current
            var next = current.state
            next.liveKeyIDs.removeAll { retired.contains($0) }
            next.retiredKeyIDs = Array((next.retiredKeyIDs + retired).suffix(KeyRingState.maxRememberedRetired))
            next.drainingKeyIDs = []
            next.reseal = nil
            let batch = RocksBatch(database: database)
            retired.forEach { batch.delete(.keyring, key: KeyRing.dataKeyRecord($0)) }
            batch.put(
                .keyring, key: KeyRing.stateRecord, value: try KeyRing.sealState(next, provider: current.provider))
            try database.write(batch, durability: .synced)
            var keys = current.keySet.keys
            retired.forEach { keys.removeValue(forKey: $0) }
            keyRing.install(
                .init(
                    state: next, provider: current.provider,
                    keySet: KeySet(
                        active: current.keySet.active, keys: keys,
                        retired: Set(next.retiredKeyIDs))))
        }
        views.withLock { $0.drainedKeysRetired() }
        purgeOldKeyRecords()
        logger.notice("data keys retired", metadata: ["keys": "\(retired)"])
    }

    /// Flushes and compacts the keyring family so that superseded and deleted key records are
    /// dropped from the files too, not only hidden. Best effort: failure is logged, not fatal.
    private func purgeOldKeyRecords() {
        do {
            try whileOpen {
                try database.flush(.keyring)
                database.compact(.keyring)
            }
        } catch {
            logger.warning("could not compact the key ring after a key change", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Master key

    /// Re-wraps every data key, the index key and the ring state under `newMasterKey` in one
    /// synced write. Reads and writes continue; afterwards the store opens only with the new key.
    public func rotateMasterKey(to newMasterKey: any MasterKeyProvider) throws {
        try keyOperations.withLock { _ in
            let oldID = keyRing.current.provider.keyID
            try exclusively {
                let current = keyRing.current
                let batch = RocksBatch(database: database)
                for id in current.state.liveKeyIDs {
                    guard let key = current.keySet.keys[id] else {
                        throw StorageError.keyRingCorrupt("live data key \(id) is not loaded")
                    }
                    batch.put(
                        .keyring, key: KeyRing.dataKeyRecord(id),
                        value: try KeyRing.wrap(
                            key.material, context: KeyRing.dataKeyContext(id), provider: newMasterKey))
                }
                batch.put(
                    .keyring, key: KeyRing.indexKeyRecord,
                    value: try KeyRing.wrap(keyRing.indexKey, context: KeyRing.indexKeyContext, provider: newMasterKey))
                batch.put(
                    .keyring, key: KeyRing.stateRecord,
                    value: try KeyRing.sealState(current.state, provider: newMasterKey))
                try database.write(batch, durability: .synced)
                keyRing.install(.init(state: current.state, provider: newMasterKey, keySet: current.keySet))
            }
            purgeOldKeyRecords()
            logger.notice("master key rotated", metadata: ["from": "\(oldID)", "to": "\(newMasterKey.keyID)"])
        }
    }
}
