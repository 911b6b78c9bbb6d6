/// A caller waiting for the loop: answered exactly once, on the loop's thread, through the
/// closure it was made with (a continuation on a member, a scheduled reply in the simulator).
/// Deadlines and start times are in the loop clock's nanoseconds.
public final class Waiter<Value>: @unchecked Sendable {
    public let startedAt: UInt64
    public let deadline: UInt64
    private var answer: ((Result<Value, EngineError>) -> Void)?

    public init(startedAt: UInt64, deadline: UInt64, answer: @escaping (Result<Value, EngineError>) -> Void) {
        self.startedAt = startedAt
        self.deadline = deadline
        self.answer = answer
    }

    public func succeed(_ value: Value) { take()?(.success(value)) }
    public func fail(_ error: EngineError) { take()?(.failure(error)) }

    private func take() -> ((Result<Value, EngineError>) -> Void)? {
        defer { answer = nil }
        return answer
    }
}

/// A proposal's caller: answered with the state machine's outcome once its entry is applied.
public typealias ProposalWaiter = Waiter<ProposalResult>
/// A linearizable read's caller: answered with the read index once this member has applied it.
public typealias ReadWaiter = Waiter<UInt64>
/// A leadership transfer's caller: answered once the target leads.
public typealias TransferWaiter = Waiter<Void>
