/// One client operation as the client saw it: when it was invoked, and when and how it
/// completed. An operation without a completion is indeterminate: it may or may not have
/// taken effect, at any time after its invocation.
public struct HistoryOperation: Sendable, CustomStringConvertible {
    public var client: UInt64
    public var operation: KVOperation
    public var invoked: UInt64
    /// Time the result arrived, or nil if it never did.
    public var completed: UInt64?
    public var result: KVResult?

    public init(
        client: UInt64, operation: KVOperation, invoked: UInt64, completed: UInt64? = nil, result: KVResult? = nil
    ) {
        precondition((completed == nil) == (result == nil), "a completed operation has a result")
        precondition(completed.map { $0 >= invoked } ?? true, "completed before invoked")
        self.client = client
        self.operation = operation
        self.invoked = invoked
        self.completed = completed
        self.result = result
    }

    var isIndeterminateRead: Bool {
        if case .get = operation { return result == nil }
        return false
    }

    public var description: String {
        let end = completed.map { "\($0)" } ?? "∞"
        return "[\(invoked)–\(end)] client \(client): \(operation) → \(result?.description ?? "indeterminate")"
    }
}

/// What the linearizability check found.
public enum LinearizabilityVerdict: Equatable, Sendable {
    case linearizable
    /// No order of the operations on `key` respects both real time and the register's rules.
    case violation(key: String, operations: [String])
    /// The search for `key` took more than the step budget: neither proven nor refuted.
    case undecided(key: String, steps: Int)
}

/// Decides whether a key-value history is linearizable, one key at a time (each key is an
/// independent register, so the history is linearizable exactly when every key's is).
///
/// The search is Wing and Gong's: repeatedly pick an operation that could take effect first (no
/// other remaining operation completed before it was invoked), apply it to the model, and
/// backtrack when an operation's completion is reached before it was placed. Lowe's improvement
/// memoises (set of placed operations, model state) pairs already explored, which turns the
/// exponential search into one that is fast on real histories.
public struct LinearizabilityChecker {
    /// Most search steps per key before giving up with `undecided`.
    public var stepBudget: Int

    public init(stepBudget: Int = 5_000_000) {
        self.stepBudget = stepBudget
    }

    public func check(_ history: [HistoryOperation]) -> LinearizabilityVerdict {
        var byKey: [String: [HistoryOperation]] = [:]
        // Record transactions span several keys; the records' invariants check them instead.
        for operation in history where !operation.operation.isRecord {
            byKey[operation.operation.key, default: []].append(operation)
        }
        for key in byKey.keys.sorted() {
            let verdict = checkRegister(key: key, byKey[key]!)
            if verdict != .linearizable { return verdict }
        }
        return .linearizable
    }

    /// The model: a register holding a value or nothing. Returns the new state if `operation`
    /// may return `result` in `state` (nil result: indeterminate, any outcome is allowed).
    static func step(_ state: String?, _ operation: KVOperation, _ result: KVResult?) -> (allowed: Bool, state: String?)
    {
        switch operation {
        case .put(_, let value):
            return (result == nil || result == .done, value)
        case .delete:
            return (result == nil || result == .done, nil)
        case .get:
            guard let result else { return (true, state) }
            return (result == .value(state), state)
        case .cas(_, let expected, let new):
            let swaps = state == expected
            let after = swaps ? new : state
            guard let result else { return (true, after) }
            return (result == .swapped(swaps), after)
        case .record:
            preconditionFailure("record operations are not registers")
        }
    }

    /// The operations whose placement can matter. An indeterminate read constrains nothing. An
    /// indeterminate write whose value nobody observed (no read returned it, no compare-and-swap
    /// expected it) can always be taken as never applied: in any valid order that includes it,
    /// every operation placed while its value stood is either a write that replaces it or an
    /// indeterminate one that can move to the end, so dropping it leaves a valid order. This
    /// keeps faults that leave hundreds of writes unanswered from swamping the search. A
    /// compare-and-swap that completed without swapping observed only "not the expected value",
    /// which dropping a write could change, so a register that has one keeps every operation.
    static func relevant(_ operations: [HistoryOperation]) -> [HistoryOperation] {
        var observed = Set<String?>()
        for operation in operations {
            switch (operation.operation, operation.result) {
            case (.get, .value(let value)?): observed.insert(value)
            case (.cas, .swapped(false)?): return operations.filter { !$0.isIndeterminateRead }
            case (.cas(_, let expected, _), _): observed.insert(expected)
            default: break
            }
        }
        return operations.filter { operation in
            guard operation.result == nil else { return true }
            switch operation.operation {
            case .get: return false
            case .put(_, let value), .cas(_, _, let value): return observed.contains(value)
            case .delete: return observed.contains(nil)
            case .record: return false
            }
        }
    }

    private func checkRegister(key: String, _ all: [HistoryOperation]) -> LinearizabilityVerdict {
        let operations = Self.relevant(all)
        var list = EventList(operations)
        var placed = BitSet(count: operations.count)
        var state: String? = nil
        var explored = Set<SearchState>()
        var stack: [(call: Int, state: String?)] = []
        var node = list.first
        var steps = 0
        while !list.isEmpty {
            steps += 1
            if steps > stepBudget { return .undecided(key: key, steps: steps) }
            let event = list.events[node]
            if event.isCall {
                let operation = operations[event.operation]
                let (allowed, next) = Self.step(state, operation.operation, operation.result)
                if allowed {
                    var nextPlaced = placed
                    nextPlaced.insert(event.operation)
                    if explored.insert(SearchState(placed: nextPlaced, state: next)).inserted {
                        stack.append((node, state))
                        state = next
                        placed = nextPlaced
                        list.lift(node)
                        node = list.first
                        continue
                    }
                }
                node = list.next[node]
            } else {
                // The completion of an operation not yet placed: backtrack.
                guard let (call, previous) = stack.popLast() else {
                    return .violation(
                        key: key, operations: operations.sorted { $0.invoked < $1.invoked }.map(\.description))
                }
                state = previous
                placed.remove(list.events[call].operation)
                list.unlift(call)
                node = list.next[call]
            }
        }
        return .linearizable
    }
}

/// Invocations and completions in time order as a doubly linked list, so that placing an
/// operation (removing its two events) and undoing it are O(1).
private struct EventList {
    struct Event {
        var operation: Int
        var isCall: Bool
        var partner: Int = 0
    }

    /// Index 0 is the head sentinel; events follow at 1...
    var events: [Event]
    var next: [Int]
    var previous: [Int]

    init(_ operations: [HistoryOperation]) {
        var ordered: [(time: UInt64, isCall: Bool, operation: Int)] = []
        for (position, operation) in operations.enumerated() {
            ordered.append((operation.invoked, true, position))
            ordered.append((operation.completed ?? .max, false, position))
        }
        // At equal times invocations come first: treating such operations as concurrent never
        // rejects a valid history.
        ordered.sort { ($0.time, $0.isCall ? 0 : 1, $0.operation) < ($1.time, $1.isCall ? 0 : 1, $1.operation) }
        events =
            [Event(operation: -1, isCall: false)] + ordered.map { Event(operation: $0.operation, isCall: $0.isCall) }
        var callAt = [Int](repeating: 0, count: operations.count)
        var returnAt = [Int](repeating: 0, count: operations.count)
        for position in 1..<events.count {
            if events[position].isCall {
                callAt[events[position].operation] = position
            } else {
                returnAt[events[position].operation] = position
            }
        }
        for operation in operations.indices {
            events[callAt[operation]].partner = returnAt[operation]
            events[returnAt[operation]].partner = callAt[operation]
        }
        next = Array(1...events.count)
        next[events.count - 1] = 0
        previous = [events.count - 1] + Array(0..<(events.count - 1))
    }

    var first: Int { next[0] }
    var isEmpty: Bool { next[0] == 0 }

    mutating func lift(_ call: Int) {
        unlink(call)
        unlink(events[call].partner)
    }

    mutating func unlift(_ call: Int) {
        relink(events[call].partner)
        relink(call)
    }

    private mutating func unlink(_ node: Int) {
        next[previous[node]] = next[node]
        previous[next[node]] = previous[node]
    }

    private mutating func relink(_ node: Int) {
        next[previous[node]] = node
        previous[next[node]] = node
    }
}

private struct BitSet: Hashable {
    private var words: [UInt64]

    init(count: Int) { words = [UInt64](repeating: 0, count: (count + 63) / 64) }

    mutating func insert(_ bit: Int) { words[bit / 64] |= 1 << UInt64(bit % 64) }
    mutating func remove(_ bit: Int) { words[bit / 64] &= ~(1 << UInt64(bit % 64)) }
}

private struct SearchState: Hashable {
    var placed: BitSet
    var state: String?
}
