import Raft

/// A client of the simulated store: one operation at a time, retried (with the same request
/// id, so writes apply once) until it completes.
struct SimulatedClient {
    let id: UInt64
    /// The node this client sends to next (its guess of the leader).
    var target: NodeID
    var sequence: UInt64 = 0
    /// The operation in progress, if any.
    var operation: KVOperation?
    var historyIndex = 0
    var attempt = 0
    /// Last value this client saw per key (to make compare-and-swap succeed sometimes).
    var lastSeen: [String: String] = [:]
}

extension Simulation {
    func startOperation(client index: Int) {
        guard !healed else { return }  // new work stops with the faults; pending work must finish
        var client = clients[index]
        let key = "k\(random.next(below: UInt64(keyCount)))"
        client.sequence += 1
        let value = "\(client.id).\(client.sequence)"
        let roll = random.next(below: 100)
        let operation: KVOperation
        if roll < 40 {
            operation = .get(key: key)
        } else if roll < 70 {
            operation = .put(key: key, value: value)
        } else if roll < 90 {
            operation = .cas(key: key, expected: client.lastSeen[key], new: value)
        } else {
            operation = .delete(key: key)
        }
        history.append(HistoryOperation(client: client.id, operation: operation, invoked: now))
        client.historyIndex = history.count - 1
        client.operation = operation
        client.attempt = 0
        clients[index] = client
        log("client \(client.id) invokes \(operation) as #\(client.sequence)")
        send(client: index)
    }

    private func send(client index: Int) {
        clients[index].attempt += 1
        let client = clients[index]
        let request = ClientRequest(id: RequestID(client: client.id, sequence: client.sequence), client: index, operation: client.operation!)
        // Reads are spread over the members, as the front does (a follower asks the leader for
        // a read index); writes go to the member the client believes leads.
        var destination = client.target
        if case .get = request.operation, client.attempt == 1, random.next(below: 2) == 0 { destination = randomNode() }
        if !(!healed && chance(perMille: profile.dropPerMille)) {
            queue.schedule(.request(destination, request), at: now + networkDelay())
        }
        queue.schedule(.clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: true),
                       at: now + options.requestTimeoutMilliseconds)
    }

    /// Sends the current operation again (to another node after a timeout).
    func retry(client index: Int, sequence: UInt64, attempt: Int, elsewhere: Bool) {
        let client = clients[index]
        guard client.operation != nil, client.sequence == sequence, client.attempt == attempt else { return }
        if elsewhere { clients[index].target = randomNode() }
        send(client: index)
    }

    func receive(_ reply: ClientReply, client index: Int) {
        var client = clients[index]
        guard let operation = client.operation, reply.request.sequence == client.sequence else { return }
        switch reply {
        case .result(_, let result):
            history[client.historyIndex] = HistoryOperation(client: client.id, operation: operation,
                                                            invoked: history[client.historyIndex].invoked,
                                                            completed: now, result: result)
            remember(operation, result, in: &client)
            client.operation = nil
            log("client \(client.id) #\(client.sequence) \(operation) → \(result)")
            queue.schedule(.clientStart(client: index), at: now + random.next(below: 10))
        case .notLeader(_, let hint):
            client.target = hint != 0 ? hint : randomNode()
            queue.schedule(.clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: false), at: now + 5)
        case .retryLater:
            queue.schedule(.clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: false), at: now + 20)
        }
        clients[index] = client
    }

    private func remember(_ operation: KVOperation, _ result: KVResult, in client: inout SimulatedClient) {
        switch (operation, result) {
        case (.get(let key), .value(let value)): client.lastSeen[key] = value
        case (.put(let key, let value), _): client.lastSeen[key] = value
        case (.cas(let key, _, let new), .swapped(true)): client.lastSeen[key] = new
        case (.delete(let key), _): client.lastSeen[key] = nil
        default: break
        }
    }

    /// Any node that has not been retired (it may be down: the client cannot know).
    func randomNode() -> NodeID {
        let candidates = nodes.keys.sorted().filter { !nodes[$0]!.retired }
        return candidates[Int(random.next(below: UInt64(candidates.count)))]
    }

    /// A node receives a client request: writes are proposed (or forwarded), reads ask for a
    /// read index and wait until it is applied.
    func receive(_ request: ClientRequest, at id: NodeID) throws {
        guard let node = nodes[id], let raft = node.raft else { return }
        log("node \(id) receives \(request.operation) from \(request.id)")
        do throws(RaftError) {
            if case .get = request.operation {
                let context = node.nextReadContext()
                try raft.requestRead(context: context)
                node.holdRead(SimulatedNode.PendingRead(context: context, request: request, index: nil,
                                                        committedBefore: invariants.highestCommitted))
            } else {
                _ = try raft.propose(KVCommand(request: request.id, operation: request.operation).encoded)
                node.waitingWrites[request.id] = request.client
            }
        } catch .notLeader(let hint) {
            reply(.notLeader(request.id, hint: hint), to: request.client, from: id)
        } catch {
            reply(.retryLater(request.id), to: request.client, from: id)
        }
        try drive(node)
    }

    func reply(_ reply: ClientReply, to client: Int, from node: NodeID) {
        if !healed && chance(perMille: profile.dropPerMille) { return }
        queue.schedule(.reply(client: client, reply), at: now + networkDelay())
    }
}
