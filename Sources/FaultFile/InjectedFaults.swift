// The fault file: what a test or a drill writes for a debug `crm-node` to read
// (`CRM_FAULT_FILE`), one typed value shared by the node (`FaultHooks`) and the drills
// (`crm-chaos`), so that a renamed or retyped field breaks the build rather than a drill.

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
    /// Added to the time sign-in sessions are checked and stamped with (their idle and
    /// absolute timeouts, tested without waiting hours).
    public var sessionClockOffsetMilliseconds: Int64?
    /// Waited between a records write's authorization check and its proposal (to show that a
    /// permission change in between aborts the write).
    public var checkToCommitDelayMilliseconds: Int?
    /// Changes a byte of this member's audit entry of that seq in its store (once per value),
    /// as someone editing the files would: the next checkpoint raises TAMPER here.
    public var tamperAuditSeq: UInt64?
    /// Waited before each batch of audit entries this member writes, as by a trail that is not
    /// keeping up: its queue fills and AUDIT_BACKLOG is raised.
    public var auditAppendDelayMilliseconds: Int?
    /// Waited before each chunk file a backup on this member writes (a slow target disk): a
    /// backup is then long enough to be cut short by a kill.
    public var backupChunkDelayMilliseconds: Int?

    public init(
        fsyncDelayMilliseconds: Int? = nil, fsyncFails: Bool? = nil, freeDiskBytes: UInt64? = nil,
        clockOffsetMilliseconds: Int64? = nil, plantedBug: DrillBug? = nil, sessionClockOffsetMilliseconds: Int64? = nil
    ) {
        self.sessionClockOffsetMilliseconds = sessionClockOffsetMilliseconds
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
        case sessionClockOffsetMilliseconds = "session_clock_offset_ms"
        case checkToCommitDelayMilliseconds = "check_to_commit_delay_ms"
        case tamperAuditSeq = "tamper_audit_seq"
        case auditAppendDelayMilliseconds = "audit_append_delay_ms"
        case backupChunkDelayMilliseconds = "backup_chunk_delay_ms"
    }
}

/// Bugs that break a guarantee on purpose, so that a chaos drill can show it notices (debug
/// builds only, like every injected fault: the branches that act on them are compiled only with
/// `CRM_FAULT_HOOKS`). Not to be confused with the simulator's `Raft.PlantedBug`, which plants
/// bugs in the core and the member loop of simulated members.
public enum DrillBug: String, Codable, Sendable, CaseIterable {
    /// Linearizable reads are served from the member's own state without a ReadIndex, so a
    /// deposed or cut-off leader answers with stale data.
    case staleReads = "stale_reads"
    /// The leader acknowledges a put at once and proposes it 200 ms later (write-behind), before
    /// it is synced or replicated; a leader that dies takes acknowledged writes with it.
    case ackBeforeCommit = "ack_before_commit"
}
