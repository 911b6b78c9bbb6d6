import CRM
import Dispatch
import Engine
import Foundation
import Identity
import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What another member last told this one about itself (through the front's polls).
public struct PeerObservation: Sendable, Equatable {
    /// Uptime nanoseconds of the latest answer (nil: never answered).
    public var lastAnsweredAt: UInt64?
    /// The round trip of the latest answered poll.
    public var roundTripMicroseconds: UInt64?
    public var report: HealthReport?
    public var alarms: [Alarm.Kind] = []
    public var serving = false
    public var appliedIndex: UInt64 = 0
    /// Its wall clock minus this member's at the latest poll.
    public var clockOffsetMillis: Int64?

    public init() {}
}

/// The health monitor's latest findings about this member.
public struct HealthSnapshot: Sendable {
    public var report = HealthReport(state: .healthy, reasons: [])
    public var alarms: [Alarm] = []
    public var freeDiskBytes: UInt64 = 0
    public var storeBytes: UInt64 = 0
    public var sync = SyncAssessment(
        samples: 0, medianNanoseconds: 0, worstNanoseconds: 0, stuckNanoseconds: 0, failing: false)
    public var worstStallMilliseconds: UInt64 = 0
    public var applyLag: UInt64 = 0
    public var dead: [DeadMember] = []

    public func alarm(_ kind: Alarm.Kind) -> Alarm? { alarms.first { $0.kind == kind } }
}

/// Watches this member — free disk against the reserve and quota, synced-write latency (a
/// probe write every check, and the Raft log's own), apply lag, stalls of the Raft and network
/// loops — and its peers (as the front's polls see them). Raises and clears alarms, and on the
/// leader hands leadership over when its own disk fails or fills.
public final class HealthMonitor: @unchecked Sendable {
    let config: NodeConfig
    private let engine: RaftEngine
    private let group: MultiThreadedEventLoopGroup
    private let peers: @Sendable () -> [NodeID: PeerObservation]
    private let logger: Logger
    private let queue = DispatchQueue(label: "crm.health")
    private let probeQueue = DispatchQueue(label: "crm.health.probe")
    private var timer: (any DispatchSourceTimer)?
    private let state = Mutex(HealthSnapshot())
    private let networkLateness = Mutex(TimedSamples(capacity: 256))
    private let probing = Atomic<Bool>(false)
    private let startedAt = DispatchTime.now().uptimeNanoseconds
    // Monitor-queue state.
    private var lastCheck: UInt64 = 0
    private var lastHandOff: UInt64 = 0
    private var corruptAlarm: Alarm?
    private var tamperAlarm: Alarm?
    private var noSpaceAlarm: Alarm?
    private var crmKeyAlarm: Alarm?
    private var authAttackAlarm: Alarm?
    private var clockSkewAlarm: Alarm?
    private var auditBacklogAlarm: Alarm?
    private var backupStaleAlarm: Alarm?
    private var backupGapAlarm: Alarm?
    /// What keeps the CRM from using its keys on this member (nil: nothing).
    private let crmKeyProblem: @Sendable () -> CRMKeyError?
    /// The cluster's failed sign-ins, counted while this member leads.
    private let attacks: AuthAttackWatch?
    /// This member's queue of audit entries waiting to be written.
    let auditBacklog: AuditBacklog?
    /// This member's backups (BACKUP_STALE).
    let backups: BackupStatus?
    /// A wall clock this far from most peers' raises CLOCK_SKEW.
    static let clockSkewBoundMillis: Int64 = 10_000
    private let replacer: AutoReplacer

    public init(
        config: NodeConfig, engine: RaftEngine, group: MultiThreadedEventLoopGroup,
        peers: @escaping @Sendable () -> [NodeID: PeerObservation],
        crmKeyProblem: @escaping @Sendable () -> CRMKeyError? = { nil }, attacks: AuthAttackWatch? = nil,
        auditBacklog: AuditBacklog? = nil, backups: BackupStatus? = nil, logger: Logger
    ) {
        self.backups = backups
        self.crmKeyProblem = crmKeyProblem
        self.attacks = attacks
        self.auditBacklog = auditBacklog
        self.config = config
        self.engine = engine
        self.group = group
        self.peers = peers
        self.logger = logger
        replacer = AutoReplacer(config: config, engine: engine, logger: logger)
    }

    public var snapshot: HealthSnapshot { state.withLock { $0 } }

    public func start() {
        if FaultHooks.shared.isActive { logger.warning("fault hooks are on (CRM_FAULT_FILE): this is a test build") }
        let timer = DispatchSource.makeTimerSource(queue: queue)
        let interval = DispatchTimeInterval.milliseconds(config.healthCheckIntervalMilliseconds)
        timer.schedule(deadline: .now(), repeating: interval, leeway: .milliseconds(5))
        timer.setEventHandler { [weak self] in self?.check() }
        self.timer = timer
        timer.resume()
    }

    public func stop() {
        timer?.cancel()
        queue.sync {}
    }

    /// Raised when an audit checkpoint finds this member's trail differs from the cluster's;
    /// cleared only by a restart after repair (re-adding the member from a snapshot).
    public func raiseTamper(_ reason: String) {
        queue.async { [self] in
            guard tamperAlarm == nil else { return }
            tamperAlarm = Alarm(kind: .tamper, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
            logger.critical(
                "TAMPER alarm: this member's audit trail differs from the cluster's; it serves no data until repaired",
                metadata: ["reason": "\(reason)"])
            check()
        }
    }

    /// Raised by an integrity check that found damage; cleared only by a restart after repair.
    public func raiseCorrupt(_ reason: String) {
        queue.async { [self] in
            guard corruptAlarm == nil else { return }
            corruptAlarm = Alarm(kind: .corrupt, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
            logger.critical(
                "CORRUPT alarm: this member serves no data until it is repaired", metadata: ["reason": "\(reason)"])
            check()
        }
    }

    // MARK: - The check (on `queue`)

    func check() {
        let now = DispatchTime.now().uptimeNanoseconds
        FaultHooks.shared.reload(logger: logger)
        recordLoopLateness(now: now)
        probeSync()
        let status = engine.currentStatus
        var snapshot = HealthSnapshot()
        (snapshot.freeDiskBytes, snapshot.storeBytes) = diskUsage()
        updateNoSpace(free: snapshot.freeDiskBytes, store: snapshot.storeBytes)
        updateCRMKey()
        updateAuthAttack()
        let observed = peers()
        updateClockSkew(observed)
        updateAuditBacklog()
        updateBackupStale()
        updateBackupGap()
        snapshot.alarms = [
            noSpaceAlarm, corruptAlarm, tamperAlarm, crmKeyAlarm, authAttackAlarm, clockSkewAlarm, auditBacklogAlarm,
            backupStaleAlarm,
            backupGapAlarm,
        ].compactMap { $0 }
        let window = UInt64(config.fsyncWindowMilliseconds) * 1_000_000
        snapshot.sync = engine.syncLatency.withLock {
            $0.assess(now: now, window: window, slow: UInt64(config.fsyncSlowMilliseconds) * 1_000_000)
        }
        let stallSince = now - min(now, 10_000_000_000)
        let stalls =
            engine.loopLateness.withLock { $0.values(since: stallSince) }
            + networkLateness.withLock { $0.values(since: stallSince) }
        snapshot.worstStallMilliseconds = (stalls.max() ?? 0) / 1_000_000
        snapshot.applyLag = status.commitIndex - min(status.commitIndex, status.appliedIndex)
        snapshot.dead = deadMembers(status, observed, now: now)
        snapshot.report = assess(status, snapshot)
        state.withLock { $0 = snapshot }
        handOffIfUnfit(status, snapshot, observed, now: now)
        replacer.consider(status, dead: snapshot.dead) { step in Task { await step() } }
        lastCheck = now
    }

    private func assess(_ status: EngineStatus, _ snapshot: HealthSnapshot) -> HealthReport {
        var report = HealthReport.assess(
            status, electionTimeoutMilliseconds: UInt64(config.electionTimeoutMilliseconds),
            maxApplyLag: config.maxApplyLag)
        if let corrupt = corruptAlarm {
            return HealthReport(state: .down, reasons: ["CORRUPT: \(corrupt.reason)"] + report.reasons)
        }
        if let tamper = tamperAlarm {
            return HealthReport(state: .down, reasons: ["TAMPER: \(tamper.reason)"] + report.reasons)
        }
        guard report.state != .down else { return report }
        if let noSpace = noSpaceAlarm { report.reasons.insert("NOSPACE: \(noSpace.reason)", at: 0) }
        if snapshot.sync.failing {
            report.reasons.append(
                "the disk is failing: every synced write for \(config.fsyncWindowMilliseconds) ms took over \(config.fsyncSlowMilliseconds) ms (worst \(snapshot.sync.worstNanoseconds / 1_000_000) ms)"
            )
        }
        if snapshot.worstStallMilliseconds >= UInt64(config.stallMilliseconds) {
            report.reasons.append(
                "a loop stalled for \(snapshot.worstStallMilliseconds) ms in the last 10 s (CPU starved, or paused)")
        }
        for dead in snapshot.dead {
            report.reasons.append("member \(dead.id) is dead: silent for \(dead.silentMilliseconds / 1000) s")
        }
        report.state = report.reasons.isEmpty ? .healthy : .degraded
        return report
    }

    // MARK: - Measurements

    /// Free bytes on the data directory's file system (or the injected figure), and the bytes
    /// of the store's files.
    private func diskUsage() -> (free: UInt64, store: UInt64) {
        var stats = statvfs()
        let real = statvfs(config.dataDir, &stats) == 0 ? UInt64(stats.f_bavail) * UInt64(stats.f_frsize) : 0
        let free = FaultHooks.shared.current.freeDiskBytes ?? real
        var store: UInt64 = 0
        let files = FileManager.default
        if let names = try? files.contentsOfDirectory(atPath: config.dataDir + "/db") {
            for name in names {
                let size = (try? files.attributesOfItem(atPath: config.dataDir + "/db/" + name))?[.size] as? NSNumber
                store += size?.uint64Value ?? 0
            }
        }
        return (free, store)
    }

    /// CRMKEY while the cluster's key set does not open with this member's key; cleared when it
    /// does (a key set of the right key may arrive by snapshot).
    private func updateCRMKey() {
        switch crmKeyProblem() {
        case .wrongKey(let expected, let actual)?:
            guard crmKeyAlarm == nil else { return }
            let reason =
                "the cluster's CRM key set is wrapped by key \(expected), this member's crm.key_file holds \(actual): give it the cluster's file"
            crmKeyAlarm = Alarm(kind: .crmKey, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
            logger.critical("CRMKEY alarm: this member serves no CRM call", metadata: ["reason": "\(reason)"])
        case .keySetDamaged(let version, let why)?:
            guard crmKeyAlarm == nil else { return }
            let reason = "CRM key set v\(version) does not open here: \(why)"
            crmKeyAlarm = Alarm(kind: .crmKey, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
            logger.critical("CRMKEY alarm: this member serves no CRM call", metadata: ["reason": "\(reason)"])
        default:
            if crmKeyAlarm != nil { logger.notice("CRMKEY alarm cleared") }
            crmKeyAlarm = nil
        }
    }

    /// AUTH_ATTACK while the leader's count of the cluster's failed sign-ins says so.
    private func updateAuthAttack() {
        guard let attacks, let attack = attacks.attack(now: WallClock.nowMillis()) else {
            if authAttackAlarm != nil { logger.notice("AUTH_ATTACK alarm cleared: failed sign-ins fell back") }
            authAttackAlarm = nil
            return
        }
        guard authAttackAlarm == nil else { return }
        let reason =
            "\(attack.failures) failed sign-ins across the cluster within a minute, over crm.auth_attack_failures_per_minute (\(attacks.threshold))"
        authAttackAlarm = Alarm(kind: .authAttack, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
        logger.critical("AUTH_ATTACK alarm", metadata: ["reason": "\(reason)"])
    }

    /// CLOCK_SKEW while this member's wall clock is more than the bound away from most of the
    /// peers that answered (with one peer, from it): the odd one out raises it, not the others.
    private func updateClockSkew(_ observed: [NodeID: PeerObservation]) {
        let offsets = observed.compactMapValues(\.clockOffsetMillis)
        let far = offsets.filter { abs($0.value) > Self.clockSkewBoundMillis }.sorted { $0.key < $1.key }
        guard !offsets.isEmpty, far.count * 2 > offsets.count else {
            if clockSkewAlarm != nil { logger.notice("CLOCK_SKEW alarm cleared") }
            clockSkewAlarm = nil
            return
        }
        guard clockSkewAlarm == nil else { return }
        let differences = far.map { peer, offset in
            "\(Double(abs(offset)) / 1000) s \(offset < 0 ? "ahead of" : "behind") member \(peer)"
        }
        let reason =
            "this member's wall clock is \(differences.joined(separator: ", ")), over the \(Self.clockSkewBoundMillis / 1000) s bound: fix its time source"
        clockSkewAlarm = Alarm(kind: .clockSkew, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
        logger.critical("CLOCK_SKEW alarm", metadata: ["reason": "\(reason)"])
    }

    /// AUDIT_BACKLOG while an overflow of the audit queue is less than a minute old; its reason
    /// counts the reads refused since the first.
    private func updateAuditBacklog() {
        guard let auditBacklog, let overflow = auditBacklog.overflow(now: WallClock.nowMillis()) else {
            if auditBacklogAlarm != nil { logger.notice("AUDIT_BACKLOG alarm cleared: the audit queue kept up") }
            auditBacklogAlarm = nil
            return
        }
        let reason =
            "the audit queue (\(auditBacklog.capacity) entries) filled: \(overflow.refusedEntries) reads refused UNAVAILABLE in the last minute; the trail's commits are not keeping up"
        let raisedAt = auditBacklogAlarm?.raisedAt ?? WallClock.now()
        if auditBacklogAlarm == nil { logger.critical("AUDIT_BACKLOG alarm", metadata: ["reason": "\(reason)"]) }
        auditBacklogAlarm = Alarm(kind: .auditBacklog, memberID: config.id, raisedAt: raisedAt, reason: reason)
    }

    /// BACKUP_STALE while this member leads and its schedule has gone two intervals without a backup.
    private func updateBackupStale() {
        guard let reason = backups?.staleness(now: WallClock.nowMillis()) else {
            if backupStaleAlarm != nil { logger.notice("BACKUP_STALE alarm cleared") }
            backupStaleAlarm = nil
            return
        }
        if backupStaleAlarm == nil { logger.critical("BACKUP_STALE alarm", metadata: ["reason": "\(reason)"]) }
        backupStaleAlarm = Alarm(
            kind: .backupStale, memberID: config.id, raisedAt: backupStaleAlarm?.raisedAt ?? WallClock.now(),
            reason: reason)
    }

    /// BACKUP_GAP while entries compacted unarchived are not covered by a newer full backup.
    private func updateBackupGap() {
        guard let reason = backups?.archiveGap() else {
            if backupGapAlarm != nil { logger.notice("BACKUP_GAP alarm cleared") }
            backupGapAlarm = nil
            return
        }
        if backupGapAlarm == nil { logger.critical("BACKUP_GAP alarm", metadata: ["reason": "\(reason)"]) }
        backupGapAlarm = Alarm(
            kind: .backupGap, memberID: config.id, raisedAt: backupGapAlarm?.raisedAt ?? WallClock.now(), reason: reason
        )
    }

    private func updateNoSpace(free: UInt64, store: UInt64) {
        let reserve = config.diskReserveBytes, quota = config.storageQuotaBytes
        if noSpaceAlarm == nil {
            let reason: String? =
                free < reserve
                ? "\(free) bytes free on the data disk, below the reserve of \(reserve) (health.disk_reserve_bytes); free space on \(config.dataDir)'s disk"
                : store > quota
                    ? "the store holds \(store) bytes, over the quota of \(quota) (health.storage_quota_bytes); delete data and compact (crmctl compact), or raise the quota"
                    : nil
            if let reason {
                noSpaceAlarm = Alarm(kind: .noSpace, memberID: config.id, raisedAt: WallClock.now(), reason: reason)
                logger.critical(
                    "NOSPACE alarm raised: writes that add data are refused", metadata: ["reason": "\(reason)"])
            }
        } else if free >= reserve + reserve / 10 && store <= quota - quota / 50 {
            // Cleared with a margin, so that the alarm does not flap at the threshold.
            logger.notice("NOSPACE alarm cleared", metadata: ["free": "\(free)", "store": "\(store)"])
            noSpaceAlarm = nil
        }
    }

    /// One 4 KiB synced write to a probe file, so that a failing disk shows even without
    /// traffic; skipped while the previous probe is still running (it then counts as stuck).
    private func probeSync() {
        guard probing.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return }
        let path = config.dataDir + "/health-probe"
        probeQueue.async { [engine, logger] in
            defer { self.probing.store(false, ordering: .releasing) }
            engine.syncLatency.withLock { $0.begin(.probe, at: DispatchTime.now().uptimeNanoseconds) }
            do {
                try FaultHooks.shared.beforeSync()
                let descriptor = open(path, O_WRONLY | O_CREAT, 0o600)
                guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                defer { close(descriptor) }
                let block = [UInt8](repeating: 0x5A, count: 4096)
                guard pwrite(descriptor, block, block.count, 0) == block.count, fsync(descriptor) == 0 else {
                    throw POSIXError(.init(rawValue: errno) ?? .EIO)
                }
                engine.syncLatency.withLock { $0.end(.probe, at: DispatchTime.now().uptimeNanoseconds) }
            } catch {
                // Left in progress: a disk that cannot sync counts as stuck.
                logger.error("health probe write failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The monitor's own timer lateness, and how long a task waits to run on each network loop.
    private func recordLoopLateness(now: UInt64) {
        let interval = UInt64(config.healthCheckIntervalMilliseconds) * 1_000_000
        if lastCheck != 0, now > lastCheck + 2 * interval {
            networkLateness.withLock { $0.record(at: now, nanoseconds: now - lastCheck - interval) }
        }
        for loop in group.makeIterator() {
            let scheduled = DispatchTime.now().uptimeNanoseconds
            loop.execute { [weak self] in
                let ran = DispatchTime.now().uptimeNanoseconds
                if ran > scheduled + 50_000_000 {
                    self?.networkLateness.withLock { $0.record(at: ran, nanoseconds: ran - scheduled) }
                }
            }
        }
    }

    // MARK: - Failover

    /// Members silent (to the front's polls and, on the leader, to Raft) for longer than the dead time.
    private func deadMembers(_ status: EngineStatus, _ observed: [NodeID: PeerObservation], now: UInt64) -> [DeadMember]
    {
        let deadAfter = UInt64(config.deadAfterSeconds) * 1000
        let members = status.voters.union(status.learners)
        let spare = config.spares.first { !members.contains($0.id) }
        return members.sorted().filter { $0 != config.id }.compactMap { id in
            let polled = observed[id]?.lastAnsweredAt ?? startedAt
            var silent = (now - min(polled, now)) / 1_000_000
            if let raft = status.lastContactMilliseconds[id] { silent = min(silent, raft) }
            guard silent >= deadAfter else { return nil }
            return DeadMember(
                id: id, silentMilliseconds: silent, replaceCommands: DeadMember.commands(replacing: id, with: spare))
        }
    }

    /// On the leader: a full disk, a failing disk or damaged data make it hand leadership to the
    /// healthiest caught-up voter (at most one attempt per two election timeouts).
    private func handOffIfUnfit(
        _ status: EngineStatus, _ snapshot: HealthSnapshot, _ observed: [NodeID: PeerObservation], now: UInt64
    ) {
        guard status.role == .leader, config.handOffOnDiskFailure else { return }
        let why: String? =
            corruptAlarm != nil
            ? "CORRUPT"
            : tamperAlarm != nil
                ? "TAMPER" : noSpaceAlarm != nil ? "NOSPACE" : snapshot.sync.failing ? "failing disk" : nil
        guard let why, now >= lastHandOff + 2 * UInt64(config.electionTimeoutMilliseconds) * 1_000_000 else { return }
        guard
            let target = Self.handOffTarget(
                status, observed, electionTimeout: UInt64(config.electionTimeoutMilliseconds))
        else {
            logger.warning(
                "this leader is unfit but no healthy caught-up voter can take over", metadata: ["why": "\(why)"])
            lastHandOff = now
            return
        }
        lastHandOff = now
        logger.notice("leader is unfit; handing leadership over", metadata: ["why": "\(why)", "target": "\(target)"])
        let engine = self.engine, logger = self.logger
        Task {
            do {
                try await engine.transferLeadership(to: target)
                logger.notice("leadership handed over", metadata: ["leader": "\(target)", "why": "\(why)"])
            } catch {
                logger.warning("leadership handoff failed", metadata: ["target": "\(target)", "error": "\(error)"])
            }
        }
    }

    /// The voter to hand over to: reachable over Raft, not reporting a disk alarm or being
    /// down; healthy ones first, then the most caught up.
    static func handOffTarget(
        _ status: EngineStatus, _ observed: [NodeID: PeerObservation], electionTimeout: UInt64
    ) -> NodeID? {
        let candidates = status.voters.filter { id in
            guard id != status.id, (status.lastContactMilliseconds[id] ?? .max) < electionTimeout else { return false }
            guard let seen = observed[id] else { return true }
            return seen.report?.state != .down && seen.alarms.allSatisfy(\.isAdvisory)
                && (seen.report.map { !$0.reasons.contains { $0.contains("disk is failing") } } ?? true)
        }
        func rank(_ id: NodeID) -> (Int, UInt64, NodeID) {
            (observed[id]?.report?.state == .healthy ? 1 : 0, status.matchIndexes[id] ?? 0, NodeID.max - id)
        }
        return candidates.max { rank($0) < rank($1) }
    }
}
