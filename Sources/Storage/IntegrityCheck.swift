import Logging
import Sealing

/// One damaged item found by `verify`.
public struct IntegrityProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The value is present but failed verification.
        case unreadable(SealFailure)
        /// RocksDB reported corruption (block checksum, damaged file) at or after `key`.
        case storageCorruption(String)
        /// A key ring record is damaged or unexpected.
        case keyRing(String)
    }

    public let family: ColumnFamily
    /// The damaged key; for storage corruption, the last good key before the damage (nil = the
    /// family's start).
    public let key: [UInt8]?
    public let kind: Kind

    /// Names the family only (keys may hold personal data); `key` is for the admin API.
    public var description: String {
        let place = "\(family)"
        switch kind {
        case .unreadable(let failure): return "\(place): \(failure)"
        case .storageCorruption(let message): return "\(place) and after: RocksDB: \(message)"
        case .keyRing(let message): return "\(place): key ring: \(message)"
        }
    }
}

/// What `verify` found. Problems are listed up to `maxProblemsListed`; the rest are counted.
public struct IntegrityReport: Sendable {
    public static let maxProblemsListed = 10_000

    public internal(set) var checkedByFamily: [ColumnFamily: UInt64] = [:]
    public internal(set) var problems: [IntegrityProblem] = []
    public internal(set) var problemsNotListed: UInt64 = 0

    public var checked: UInt64 { checkedByFamily.values.reduce(0, +) }
    public var problemCount: UInt64 { UInt64(problems.count) + problemsNotListed }
    public var isClean: Bool { problemCount == 0 }

    /// Counts by family, never keys: for alarms and logs, e.g. "3 damaged items (state_machine 2, raft_log 1)".
    public var summary: String {
        var byFamily: [String: Int] = [:]
        for problem in problems { byFamily["\(problem.family)", default: 0] += 1 }
        let families = byFamily.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let unlisted = problemsNotListed > 0 ? "; \(problemsNotListed) more not listed" : ""
        return "\(problemCount) damaged items (\(families)\(unlisted))"
    }

    mutating func record(_ problem: IntegrityProblem) {
        if problems.count < Self.maxProblemsListed { problems.append(problem) } else { problemsNotListed += 1 }
    }
}

extension StorageEngine {
    /// Entries examined per step of `verify`; the gate is released between steps.
    static let verifyChunk = 1024
    /// After RocksDB reports corruption the scan resumes past it; it gives up on a family after this many.
    static let maxCorruptionRestartsPerFamily = 64

    /// Reads and verifies every entry of every column family (the key ring included) from one
    /// consistent view, and reports every damaged item instead of stopping at the first.
    ///
    /// When RocksDB reports a corrupt block, the family is rescanned from the last good key with
    /// block checksums off, so that each value in the damaged region is judged on its own by its
    /// GCM tag and listed by key.
    public func verify(progress: (ColumnFamily, UInt64) -> Void = { _, _ in }) throws -> IntegrityReport {
        let view = try makeView()
        defer { view.close() }
        var report = IntegrityReport()
        for family in ColumnFamily.allCases {
            try verify(family, view: view, into: &report, progress: progress)
        }
        logger.log(
            level: report.isClean ? .info : .error, "integrity check finished",
            metadata: [
                "checked": "\(report.checked)", "problems": "\(report.problemCount)",
            ])
        return report
    }

    private func verify(
        _ family: ColumnFamily, view: StorageView, into report: inout IntegrityReport,
        progress: (ColumnFamily, UInt64) -> Void
    ) throws {
        var afterKey: [UInt8]?
        var verifyChecksums = true
        var restarts = 0
        var checked: UInt64 = 0
        while true {
            let step = try whileOpen {
                try verifyChunk(family, view: view, after: afterKey, verifyChecksums: verifyChecksums, report: &report)
            }
            checked += step.checked
            afterKey = step.lastKey ?? afterKey
            progress(family, checked)
            if let corruption = step.corruption {
                report.record(IntegrityProblem(family: family, key: afterKey, kind: .storageCorruption(corruption)))
                restarts += 1
                guard restarts <= Self.maxCorruptionRestartsPerFamily, step.checked > 0 || verifyChecksums else {
                    logger.error("integrity check cannot read past damage", metadata: ["family": "\(family)"])
                    break
                }
                verifyChecksums = false
                continue
            }
            if step.finished { break }
        }
        report.checkedByFamily[family] = checked
    }

    private struct VerifyStep {
        var checked: UInt64 = 0
        var lastKey: [UInt8]?
        var corruption: String?
        var finished = false
    }

    private func verifyChunk(
        _ family: ColumnFamily, view: StorageView, after: [UInt8]?, verifyChecksums: Bool,
        report: inout IntegrityReport
    ) throws -> VerifyStep {
        guard let snapshot = views.withLock({ $0.live[view.id]?.snapshot }) else { throw StorageError.closed }
        let iterator = database.makeIterator(
            family, snapshot: snapshot, lower: after.map { $0 + [0] }, upper: nil,
            verifyChecksums: verifyChecksums)
        iterator.seekToFirst()
        let keys = keyRing.keySet
        var step = VerifyStep()
        while iterator.isValid && step.checked < UInt64(Self.verifyChunk) {
            let key = Array(iterator.key)
            if let problem = check(family, key: key, stored: iterator.value, keys: keys) { report.record(problem) }
            step.checked += 1
            step.lastKey = key
            iterator.next()
        }
        do {
            try iterator.checkError()
        } catch let StorageError.corruption(_, _, message) {
            step.corruption = message
            return step
        } catch let StorageError.rocksdb(_, message) {
            step.corruption = message
            return step
        }
        step.finished = !iterator.isValid
        return step
    }

    private func check(
        _ family: ColumnFamily, key: [UInt8], stored: UnsafeRawBufferPointer, keys: KeySet
    ) -> IntegrityProblem? {
        if family == .keyring {
            return checkKeyRingRecord(key: key, stored: Array(stored))
        }
        do {
            _ = try key.withUnsafeBytes { keyBytes in
                try SealedValue.open(stored, location: location(family, keyBytes), keys: keys.lookup)
            }
            return nil
        } catch let failure as SealFailure {
            return IntegrityProblem(family: family, key: key, kind: .unreadable(failure))
        } catch {
            return IntegrityProblem(family: family, key: key, kind: .unreadable(.cipherFailure("\(error)")))
        }
    }

    private func checkKeyRingRecord(key: [UInt8], stored: [UInt8]) -> IntegrityProblem? {
        let provider = keyRing.current.provider
        let context: [UInt8]
        if key == KeyRing.stateRecord {
            context = KeyRing.stateContext
        } else if key == KeyRing.indexKeyRecord {
            context = KeyRing.indexKeyContext
        } else if key.count == 7, key.starts(with: Array("dk/".utf8)) {
            let id = key[3...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            context = KeyRing.dataKeyContext(id)
        } else {
            return IntegrityProblem(family: .keyring, key: key, kind: .keyRing("unexpected record"))
        }
        do {
            var opened = try provider.unwrap(stored, context: context)
            defer { scrub(&opened) }
            if key == KeyRing.stateRecord { _ = try KeyRingState.decode(opened) }
            return nil
        } catch {
            return IntegrityProblem(family: .keyring, key: key, kind: .keyRing("\(error)"))
        }
    }
}
