/// A read waiting for the leader to confirm it still leads.
struct ReadRequest {
    /// The commit index when the request arrived: the read may be served once applied to here.
    let index: UInt64
    let context: [UInt8]
    let requester: NodeID
}

/// ReadIndex requests in arrival order, each with the voters that acknowledged a heartbeat
/// sent after it. When a quorum acknowledges one, it and every request before it are confirmed.
struct ReadRequestQueue {
    /// Most requests a leader holds; beyond it the oldest is dropped (its client retries).
    static let capacity = 4096
    private var pending: [(request: ReadRequest, acks: Set<NodeID>)] = []

    mutating func add(_ request: ReadRequest, leader: NodeID) {
        if pending.count == Self.capacity { pending.removeFirst() }
        pending.append((request, [leader]))
    }

    /// Records `voter`'s acknowledgement of the heartbeat sent for `context`; returns the
    /// requests now confirmed, oldest first.
    mutating func acknowledge(context: [UInt8], from voter: NodeID, configuration: Configuration) -> [ReadRequest] {
        guard let position = pending.firstIndex(where: { $0.request.context == context }) else { return [] }
        guard configuration.isVoter(voter) else { return [] }
        pending[position].acks.insert(voter)
        let granted = pending[position].acks.filter { configuration.isVoter($0) }.count
        guard granted >= configuration.quorum else { return [] }
        let confirmed = pending[...position].map(\.request)
        pending.removeFirst(position + 1)
        return confirmed
    }
}
