import Foundation
import Logging
import Synchronization

/// Faults a test or a drill can inject into a running member: a slow or failing fsync, a full
/// disk, a shifted wall clock, and bugs planted on purpose to prove that the drills catch them.
///
/// The hooks exist only in debug builds (`CRM_FAULT_HOOKS`, which Package.swift defines for
/// the debug configuration, the one the tests build): a release binary contains no way to turn
/// them on, whatever its config or environment says. A test starts `crm-node` with
/// `CRM_FAULT_FILE=<path>` and writes this JSON there; the member re-reads it as it changes.
public struct InjectedFaults: Codable, Sendable, Equatable {
    /// Added to every synced write (the Raft log's and the health probe's).
    public var fsyncDelayMilliseconds: Int?
    /// Every synced write fails, as on a dying disk.
    public var fsyncFails: Bool?
    /// Free space the disk check sees instead of the real figure.
    public var freeDiskBytes: UInt64?
    /// Added to the wall clock the member stamps proposals and alarms with (a clock jump).
    public var clockOffsetMilliseconds: Int64?
    /// A bug switched on deliberately (see `DrillBug`).
    public var plantedBug: DrillBug?

    public init(
        fsyncDelayMilliseconds: Int? = nil, fsyncFails: Bool? = nil, freeDiskBytes: UInt64? = nil,
        clockOffsetMilliseconds: Int64? = nil, plantedBug: DrillBug? = nil
    ) {
        self.fsyncDelayMilliseconds = fsyncDelayMilliseconds
        self.fsyncFails = fsyncFails
        self.freeDiskBytes = freeDiskBytes
        self.clockOffsetMilliseconds = clockOffsetMilliseconds
        self.plantedBug = plantedBug
    }

    enum CodingKeys: String, CodingKey {
        case fsyncDelayMilliseconds = "fsync_delay_ms"
        case fsyncFails = "fsync_fails"
        case freeDiskBytes = "free_disk_bytes"
        case clockOffsetMilliseconds = "clock_offset_ms"
        case plantedBug = "planted_bug"
    }
}

/// Bugs that break a guarantee on purpose, so that a chaos drill can show it notices (debug
/// builds only, like every injected fault: the branches that act on them are compiled only with
/// `CRM_FAULT_HOOKS`). Not to be confused with the simulator's `Raft.PlantedBug`, which plants
/// bugs in the core and the member loop of simulated members.
public enum DrillBug: String, Codable, Sendable {
    /// Linearizable reads are served from the member's own state without a ReadIndex, so a
    /// deposed or cut-off leader answers with stale data.
    case staleReads = "stale_reads"
    /// The leader acknowledges a put at once and proposes it 200 ms later (write-behind), before
    /// it is synced or replicated; a leader that dies takes acknowledged writes with it.
    case ackBeforeCommit = "ack_before_commit"
}

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

    /// Called just before a synced write: waits or fails as the injected faults say.
    func beforeSync() throws {
        guard path != nil else { return }
        let faults = current
        if let delay = faults.fsyncDelayMilliseconds, delay > 0 { Thread.sleep(forTimeInterval: Double(delay) / 1000) }
        if faults.fsyncFails == true { throw InjectedFsyncFailure() }
    }
}
