import Engine
import Foundation
import KVStore
import Logging
import Raft
import Synchronization

/// On the leader, when `failover.auto_replace` is on: replaces a dead voter with a spare listed
/// in `failover.spares` — add it as a learner (its addresses recorded through the log), promote
/// it once caught up, then remove the dead voter — one change at a time, and never removing a
/// voter when fewer than `failover.min_voters` would remain. Driven by the health monitor's
/// checks; confined to its queue.
final class AutoReplacer: @unchecked Sendable {
    private let config: NodeConfig
    private let engine: RaftEngine
    private let logger: Logger
    private var replacing: (dead: NodeID, spare: MemberEndpoints)?
    /// Set while a step runs (it ends on another thread).
    private let busy = Atomic<Bool>(false)
    /// Entries a learner may trail the leader's last index by and still count as caught up.
    static let caughtUpWithin: UInt64 = 64

    init(config: NodeConfig, engine: RaftEngine, logger: Logger) {
        self.config = config
        self.engine = engine
        self.logger = logger
    }

    /// Starts one step, if one is due and none is running; `run` runs it asynchronously.
    func consider(
        _ status: EngineStatus, dead: [DeadMember], run: @escaping (@escaping @Sendable () async -> Void) -> Void
    ) {
        guard config.autoReplace, status.role == .leader, !busy.load(ordering: .acquiring) else { return }
        let deadIDs = Set(dead.map(\.id))
        guard let (deadID, spare) = replacing ?? start(status, deadIDs) else { return }
        replacing = (deadID, spare)
        let step: (String, ConfigurationChange?)
        if !status.voters.contains(deadID) {
            logger.notice(
                "automatic replacement done", metadata: ["removed": "\(deadID)", "replacement": "\(spare.id)"])
            replacing = nil
            return
        } else if status.voters.contains(spare.id) {
            guard status.voters.count - 1 >= config.minVoters else {
                logger.warning(
                    "not removing the dead voter: fewer than failover.min_voters would remain",
                    metadata: [
                        "dead": "\(deadID)", "voters": "\(status.voters.count)", "min_voters": "\(config.minVoters)",
                    ])
                return
            }
            step = ("removing the dead voter", .remove(deadID))
        } else if !deadIDs.contains(deadID) {
            logger.notice(
                "the dead member answers again; automatic replacement stopped",
                metadata: ["member": "\(deadID)", "spare": "\(spare.id)"])
            replacing = nil
            return
        } else if status.learners.contains(spare.id) {
            guard (status.matchIndexes[spare.id] ?? 0) + Self.caughtUpWithin >= status.lastIndex else { return }
            step = ("promoting the caught-up spare", .promote(spare.id))
        } else {
            step = ("adding the spare as a learner", nil)
        }
        busy.store(true, ordering: .releasing)
        logger.notice("automatic replacement: \(step.0)", metadata: ["dead": "\(deadID)", "spare": "\(spare.id)"])
        let engine = self.engine, logger = self.logger
        run { [weak self] in
            do {
                if let change = step.1 {
                    _ = try await engine.changeMembership(change)
                } else {
                    _ = try await MembershipChanges(engine: engine).addLearner(spare.id, endpoints: spare)
                }
            } catch {
                logger.warning(
                    "automatic replacement step failed; it is tried again",
                    metadata: ["step": "\(step.0)", "error": "\(error)"])
            }
            self?.stepEnded()
        }
    }

    private func stepEnded() { busy.store(false, ordering: .releasing) }

    private func start(_ status: EngineStatus, _ dead: Set<NodeID>) -> (NodeID, MemberEndpoints)? {
        let members = status.voters.union(status.learners)
        guard let deadVoter = dead.sorted().first(where: { status.voters.contains($0) }),
            let spare = config.spares.first(where: { !members.contains($0.id) })
        else { return nil }
        return (deadVoter, spare)
    }
}

/// Membership changes that need more than one log entry.
struct MembershipChanges: Sendable {
    let engine: RaftEngine

    /// Records the new member's addresses through the log (so that every member can reach it),
    /// then adds it as a learner. Returns the index of the change.
    func addLearner(_ id: NodeID, endpoints: MemberEndpoints?) async throws -> UInt64 {
        if let endpoints {
            let record = KVCommand.memberEndpoints(
                MemberAddresses(
                    id: id, peer: endpoints.peer.description, client: endpoints.client.description,
                    admin: endpoints.admin.description))
            _ = try await engine.propose(record.encoded)
        }
        return try await engine.changeMembership(.addLearner(id))
    }
}
