import Engine
import Raft

/// A member's health with the reasons for anything short of healthy.
public struct HealthReport: Sendable, Equatable {
    public enum State: String, Sendable {
        case healthy, degraded, down
    }

    public var state: State
    public var reasons: [String]

    /// Live: the process is up and its loop has not failed.
    public var isLive: Bool { state != .down }

    /// What the engine's status says: down if storage failed; degraded while no leader is
    /// known, while the state machine lags the commit index by more than `maxApplyLag`, or (on
    /// the leader) while a peer has not been heard from for an election timeout.
    public static func assess(
        _ status: EngineStatus, electionTimeoutMilliseconds: UInt64, maxApplyLag: UInt64 = 1000
    ) -> HealthReport {
        if let failure = status.failure { return HealthReport(state: .down, reasons: ["storage failed: \(failure)"]) }
        var reasons: [String] = []
        if status.leader == 0 {
            reasons.append("no leader is known (an election is under way, or this member is cut off)")
        }
        if status.commitIndex > status.appliedIndex + maxApplyLag {
            reasons.append("applying lags the commit index by \(status.commitIndex - status.appliedIndex) entries")
        }
        if status.role == .leader {
            for peer in status.voters.union(status.learners).sorted() where peer != status.id {
                let silent = status.lastContactMilliseconds[peer]
                if silent == nil || silent! > electionTimeoutMilliseconds {
                    reasons.append("member \(peer) has not answered for \(silent.map { "\($0) ms" } ?? "ever")")
                }
            }
        }
        return HealthReport(state: reasons.isEmpty ? .healthy : .degraded, reasons: reasons)
    }

    /// Ready to serve: a leader is known and this member has applied what it knows committed.
    public static func isReady(_ status: EngineStatus, maxApplyLag: UInt64 = 100) -> Bool {
        status.failure == nil && status.leader != 0 && status.commitIndex <= status.appliedIndex + maxApplyLag
    }
}
