import Engine
import KVStore
import Raft

/// A client of the simulated store, as a real one uses a member: it opens a session first, then
/// runs one operation at a time, each write numbered in the session and retried with the same
/// number (so it applies once) until it completes.
struct SimulatedClient {
    let id: UInt64
    /// The node this client sends to next (its guess of the leader).
    var target: NodeID
    /// Its session, once opened.
    var session: UInt64?
    var sequence: UInt64 = 0
    /// The operation in progress, if any.
    var operation: KVOperation?
    var historyIndex = 0
    var attempt = 0
    /// Last value this client saw per key (to make compare-and-swap succeed sometimes).
    var lastSeen: [String: String] = [:]
    /// Records as this client last saw them (to make versioned changes succeed sometimes).
    var records: [Int: RecordState] = [:]
}

extension Simulation {
    func startOperation(client index: Int) {
        guard !healed else { return } // new work stops with the faults; pending work must finish
        var client = clients[index]
        let key = "k\(random.next(below: UInt64(keyCount)))"
        client.sequence += 1
        let value = "\(client.id).\(client.sequence)"
        let roll = random.next(below: 100)
        let operation: KVOperation
        if roll < 25 {
            operation = .record(nextRecordOperation(client))
        } else if roll < 50 {
            operation = .get(key: key)
        } else if roll < 75 {
            operation = .put(key: key, value: value)
        } else if roll < 92 {
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

    /// A record change the client believes may apply (its knowledge may be stale: then the
    /// transaction's conditions refuse it), or a read.
    private func nextRecordOperation(_ client: SimulatedClient) -> RecordOperation {
        let id = Int(random.next(below: UInt64(keyCount)))
        // Tokens are few, so records contend for them and the unique index is tested.
        let token = Int(random.next(below: UInt64(keyCount + 2)))
        let roll = random.next(below: 10)
        guard let known = client.records[id] else { return roll < 6 ? .create(id: id, token: token) : .read(id: id) }
        if roll < 5 { return .retoken(id: id, from: known.token, to: token, version: known.version) }
        if roll < 7 { return .remove(id: id, token: known.token, version: known.version) }
        return .read(id: id)
    }

    private func send(client index: Int) {
        clients[index].attempt += 1
        let client = clients[index]
        let call: ClientRequest.Call = client.session.map { .operation(client.operation!, session: $0) } ?? .openSession
        let request = ClientRequest(
            id: RequestID(client: client.id, sequence: client.sequence), client: index, attempt: client.attempt,
            call: call)
        // Reads are spread over the members, as the front does (a follower asks the leader for
        // a read index); writes go to the member the client believes leads.
        var destination = client.target
        if case .operation(let operation, _) = call, !operation.isWrite, client.attempt == 1, random.next(below: 2) == 0
        {
            destination = randomNode()
        }
        if !(!healed && chance(perMille: profile.dropPerMille)) {
            queue.schedule(.request(destination, request), at: now + networkDelay())
        }
        // Each attempt waits twice as long as the one before (up to four times the first), as
        // a client with back-off does: fixed retries would keep an overloaded leader full of
        // proposals nobody waits for any more.
        let wait = options.requestTimeoutMilliseconds << UInt64(min(client.attempt - 1, 2))
        queue.schedule(
            .clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: true),
            at: now + wait)
    }

    /// Sends the current operation again (to another node after a timeout).
    func retry(client index: Int, sequence: UInt64, attempt: Int, elsewhere: Bool) {
        let client = clients[index]
        guard client.operation != nil, client.sequence == sequence, client.attempt == attempt else { return }
        if elsewhere { clients[index].target = randomNode() }
        send(client: index)
    }

    func receive(_ reply: ClientReply, client index: Int, attempt: Int) {
        var client = clients[index]
        guard let operation = client.operation, reply.request.sequence == client.sequence else { return }
        // A refusal of an earlier attempt says nothing about the one in flight.
        if case .notLeader = reply, attempt != client.attempt { return }
        if case .retryLater = reply, attempt != client.attempt { return }
        switch reply {
        case .result(_, let result):
            guard client.session != nil else { return }
            history[client.historyIndex] = HistoryOperation(
                client: client.id, operation: operation,
                invoked: history[client.historyIndex].invoked,
                completed: now, result: result)
            remember(operation, result, in: &client)
            client.operation = nil
            log("client \(client.id) #\(client.sequence) \(operation) → \(result)")
            queue.schedule(.clientStart(client: index), at: now + random.next(below: 10))
        case .sessionOpened(_, let session):
            guard client.session == nil else { return }
            // The attempt count goes on (not back to 0), so that the opening's pending retry
            // cannot be taken for the operation's.
            client.session = session
            log("client \(client.id) opened session \(session)")
            clients[index] = client
            send(client: index)
            return
        case .notLeader(_, let hint):
            client.target = hint != 0 ? hint : randomNode()
            queue.schedule(
                .clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: false),
                at: now + 5)
        case .retryLater:
            queue.schedule(
                .clientRetry(client: index, sequence: client.sequence, attempt: client.attempt, elsewhere: false),
                at: now + 20)
        }
        clients[index] = client
    }

    private func remember(_ operation: KVOperation, _ result: KVResult, in client: inout SimulatedClient) {
        switch (operation, result) {
        case (.get(let key), .value(let value)): client.lastSeen[key] = value
        case (.put(let key, let value), _): client.lastSeen[key] = value
        case (.cas(let key, _, let new), .swapped(true)): client.lastSeen[key] = new
        case (.delete(let key), _): client.lastSeen[key] = nil
        case (.record(.create(let id, let token)), .transaction(.applied(let version))),
            (.record(.retoken(let id, _, let token, _)), .transaction(.applied(let version))):
            client.records[id] = RecordState(token: token, version: version)
        case (.record(let record), .transaction):
            client.records[record.id] = nil // removed, or changed by another client: read it again
        case (.record(.read(let id)), .record(let state)):
            client.records[id] = state
        default: break
        }
    }

    /// Any node that has not been retired (it may be down: the client cannot know).
    func randomNode() -> NodeID {
        let candidates = nodes.keys.sorted().filter { !nodes[$0]!.retired }
        return candidates[Int(random.next(below: UInt64(candidates.count)))]
    }

    /// A node receives a client request and hands it to its loop, as a member's client API
    /// does: writes and session openings are proposed, reads wait for a read index to be
    /// applied. The answer goes back when the loop answers the waiter.
    func receive(_ request: ClientRequest, at id: NodeID) throws {
        guard let node = nodes[id], let loop = node.loop else { return }
        let incarnation = node.incarnation
        let started = clock.nanoseconds
        let deadline = started + Self.memberRequestTimeoutMilliseconds * 1_000_000
        func failed(_ error: EngineError) {
            if case .notLeader(let hint) = error {
                reply(.notLeader(request.id, hint: hint), to: request, from: id)
            } else {
                reply(.retryLater(request.id), to: request, from: id)
            }
        }
        switch request.call {
        case .openSession:
            log("node \(id) receives a session opening from client \(request.id.client)")
            let command = KVCommand.openSession(
                id: 1 + random.next(below: KVCommand.sessionIDLimit - 1), owner: owner(request),
                proposedAtMillis: now)
            loop.propose(
                command.encoded,
                ProposalWaiter(startedAt: started, deadline: deadline) { [unowned self] result in
                    switch result {
                    case .success(let applied):
                        if case .sessionOpened(let session)? = applied.outcome {
                            reply(.sessionOpened(request.id, session), to: request, from: id)
                        } else {
                            reply(.retryLater(request.id), to: request, from: id)
                        }
                    case .failure(let error): failed(error)
                    }
                })
        case .operation(let operation, _) where !operation.isWrite:
            log("node \(id) receives \(operation) from \(request.id)")
            let committedBefore = invariants.highestCommitted
            loop.read(
                ReadWaiter(startedAt: started, deadline: deadline) { [unowned self] result in
                    switch result {
                    case .success(let index):
                        do {
                            try invariants.observeReadIndex(
                                index, committedBefore: committedBefore, node: id, request: "\(request.id)")
                            guard nodes[id]?.incarnation == incarnation, let kv = nodes[id]?.kv else { return }
                            reply(.result(request.id, try Self.read(operation, kv)), to: request, from: id)
                        } catch {
                            deferred = deferred ?? error
                        }
                    case .failure(let error): failed(error)
                    }
                })
        case .operation(let operation, let session):
            log("node \(id) receives \(operation) from \(request.id)")
            let command = Self.command(
                operation, session: session, sequence: request.id.sequence, owner: owner(request), at: now)
            // Half the writes a follower receives it forwards to the leader, as a follower's
            // front does; the rest it refuses naming the leader, as a member's client API does.
            let forwardable = random.next(below: 2) == 0 ? command.sessionWrite : nil
            loop.propose(
                command.encoded,
                ProposalWaiter(startedAt: started, deadline: deadline) { [unowned self] result in
                    switch result {
                    case .success(let applied):
                        // A late copy of a write its client has moved on from: nobody waits for it.
                        if case .superseded? = applied.outcome, clients[request.client].sequence > request.id.sequence {
                            return
                        }
                        do {
                            reply(
                                .result(
                                    request.id, try Self.result(of: operation, applied.outcome, request: request.id)),
                                to: request, from: id)
                        } catch {
                            deferred = deferred ?? error
                        }
                    case .failure(let error): failed(error)
                    }
                }, forwardable: forwardable)
        }
        try drive(node)
    }

    /// How long a member lets a request wait (in ticks, as on a real member: 100).
    static let memberRequestTimeoutMilliseconds: UInt64 = 1000

    /// The client identity that owns its sessions (a certificate's name on a real member).
    private func owner(_ request: ClientRequest) -> String { "crm://client/sim-\(request.id.client)" }

    /// What a member reads for a read operation, once its read index is applied.
    static func read(_ operation: KVOperation, _ kv: ReplicatedKV) throws -> KVResult {
        switch operation {
        case .get(let key):
            return .value(try kv.get(Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) })
        case .record(.read(let id)):
            guard let stored = try kv.crmValue(RecordKeys.record(id)) else { return .record(nil) }
            guard let token = RecordKeys.number(stored.payload), let version = stored.version else {
                throw InvariantViolation(property: "record indexes", detail: "r\(id) does not decode")
            }
            return .record(RecordState(token: token, version: version))
        default:
            preconditionFailure("\(operation) is a write")
        }
    }

    /// The command a member proposes for a write operation.
    static func command(
        _ operation: KVOperation, session: UInt64, sequence: UInt64, owner: String, at time: UInt64
    ) -> KVCommand {
        if case .record(let record) = operation, let transaction = record.transaction {
            return .transaction(
                session: session, sequence: sequence, owner: owner, proposedAtMillis: time, transaction)
        }
        return .write(session: session, sequence: sequence, owner: owner, proposedAtMillis: time, write(operation))
    }

    static func write(_ operation: KVOperation) -> KVWrite {
        switch operation {
        case .put(let key, let value): return .put(key: Array(key.utf8), value: Array(value.utf8))
        case .delete(let key): return .delete(key: Array(key.utf8))
        case .cas(let key, let expected, let new):
            return .compareAndSwap(
                key: Array(key.utf8), expected: expected.map { Array($0.utf8) }, new: Array(new.utf8))
        case .get, .record: preconditionFailure("\(operation) is not a KV write")
        }
    }

    /// What a member's client API answers for an applied write (as `LocalKV` does: a put or a
    /// delete succeeded, a compare-and-swap swapped only when the outcome says so). Outcomes an
    /// honest client in its own session never causes fail the run.
    static func result(of operation: KVOperation, _ outcome: KVOutcome?, request: RequestID) throws -> KVResult {
        switch outcome {
        case .unknownSession?, .notSessionOwner?, .superseded?, .refused?:
            throw InvariantViolation(
                property: "session safety", detail: "\(request) \(operation) was answered \(outcome!)")
        case .compareAndSwap(let swapped)?:
            if case .cas = operation { return .swapped(swapped) }
            return .done
        case .transaction(let outcome)?:
            guard operation.isRecord else {
                throw InvariantViolation(
                    property: "session safety", detail: "\(request) \(operation) was answered \(outcome)")
            }
            return .transaction(outcome)
        default:
            if operation.isRecord {
                throw InvariantViolation(
                    property: "session safety",
                    detail: "\(request) \(operation) was answered \(outcome.map { "\($0)" } ?? "without an outcome")")
            }
            if case .cas = operation { return .swapped(false) }
            return .done
        }
    }

    func reply(_ reply: ClientReply, to request: ClientRequest, from node: NodeID) {
        if !healed && chance(perMille: profile.dropPerMille) { return }
        queue.schedule(.reply(client: request.client, attempt: request.attempt, reply), at: now + networkDelay())
    }
}
