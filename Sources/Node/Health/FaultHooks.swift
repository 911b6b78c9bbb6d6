import FaultFile
import Foundation
import Logging
import Synchronization

/// The error an injected fsync failure raises.
struct InjectedFsyncFailure: Error, CustomStringConvertible {
    var description: String { "injected fault: fsync failed (CRM_FAULT_FILE)" }
}

/// The faults in force, read from `CRM_FAULT_FILE` (debug builds only; see `InjectedFaults`).
final class FaultHooks: Sendable {
    static let shared = FaultHooks(path: ProcessInfo.processInfo.environment["CRM_FAULT_FILE"])

    private let path: String?
    private let state = Mutex<(faults: InjectedFaults, modified: Date?)>((InjectedFaults(), nil))

    init(path: String?) {
        #if CRM_FAULT_HOOKS
        self.path = path
        #else
        self.path = nil
        #endif
    }

    /// Whether this build reads a fault file at all.
    var isActive: Bool { path != nil }

    var current: InjectedFaults { state.withLock { $0.faults } }

    /// Re-reads the fault file if it changed; an absent file means no faults.
    func reload(logger: Logger) {
        guard let path else { return }
        let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
        guard modified != state.withLock({ $0.modified }) else { return }
        var faults = InjectedFaults()
        if modified != nil {
            do {
                faults = try JSONDecoder().decode(
                    InjectedFaults.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                logger.error(
                    "fault file does not parse; keeping the faults in force",
                    metadata: ["file": "\(path)", "error": "\(error)"])
                return
            }
        }
        let changed = state.withLock { state -> Bool in
            defer { state = (faults, modified) }
            return state.faults != faults
        }
        if changed { logger.warning("injected faults changed", metadata: ["faults": "\(faults)"]) }
    }

    /// The bug planted in this member, if any.
    var plantedBug: DrillBug? { path == nil ? nil : current.plantedBug }

    /// The shift of the wall clock, in seconds (0 unless injected).
    var clockOffsetSeconds: Double {
        guard path != nil, let offset = current.clockOffsetMilliseconds else { return 0 }
        return Double(offset) / 1000
    }

    /// The shift of the sessions' clock, in milliseconds (0 unless injected).
    var sessionClockOffsetMilliseconds: Int64 {
        guard path != nil else { return 0 }
        return current.sessionClockOffsetMilliseconds ?? 0
    }

    /// The audit entry to change in this member's store (nil unless injected).
    var tamperAuditSeq: UInt64? {
        guard path != nil else { return nil }
        return current.tamperAuditSeq
    }

    /// The wait between a records write's check and its proposal, in milliseconds (0 unless injected).
    var checkToCommitDelayMilliseconds: Int {
        guard path != nil else { return 0 }
        return max(0, min(current.checkToCommitDelayMilliseconds ?? 0, 10_000))
    }

    /// The wait before each batch of audit entries is written, in milliseconds (0 unless injected).
    var auditAppendDelayMilliseconds: Int {
        guard path != nil else { return 0 }
        return max(0, min(current.auditAppendDelayMilliseconds ?? 0, 10_000))
    }

    /// The wait before each chunk file a backup writes, in milliseconds (0 unless injected).
    var backupChunkDelayMilliseconds: Int {
        guard path != nil else { return 0 }
        return max(0, min(current.backupChunkDelayMilliseconds ?? 0, 10_000))
    }

    /// Called just before a synced write: waits or fails as the injected faults say.
    func beforeSync() throws {
        guard path != nil else { return }
        let faults = current
        if let delay = faults.fsyncDelayMilliseconds, delay > 0 { Thread.sleep(forTimeInterval: Double(delay) / 1000) }
        if faults.fsyncFails == true { throw InjectedFsyncFailure() }
    }
}
