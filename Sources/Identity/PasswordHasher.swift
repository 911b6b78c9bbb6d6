import Dispatch
import Sealing
import Synchronization

/// Hashes and verifies passwords off the caller's threads, a few at a time: each Argon2id hash
/// takes tens of milliseconds and 19 MiB, so at most `maxConcurrent` run at once, at most
/// `maxQueued` more wait, and any beyond are refused at once (`PasswordHasherError.busy`, a
/// RESOURCE_EXHAUSTED) rather than letting a flood of logins take the member's memory and
/// cores. A login for an unknown user verifies against a dummy hash of the same cost, so that
/// its timing does not tell which users exist.
public final class PasswordHasher: Sendable {
    public let parameters: Argon2Parameters
    public let maxConcurrent: Int
    public let maxQueued: Int
    private let pepper: SymmetricKey
    private let admission: Admission
    /// What an unknown user's password is checked against: random, of this hasher's costs.
    let dummy: StoredPassword
    /// Key derivations finished (hashes and checks), for metrics and for tests that show an
    /// unknown user's check derives a key like a known user's.
    private let derivations = Atomic<Int>(0)

    static let saltBytes = 16
    static let tagBytes = 32

    public init(
        pepper: SymmetricKey, parameters: Argon2Parameters = .standard, maxConcurrent: Int = 2, maxQueued: Int = 64
    ) throws {
        precondition(parameters.isWithinBounds, "argon2id parameters within bounds")
        precondition(maxConcurrent >= 1 && maxQueued >= 0, "a positive concurrency")
        self.pepper = pepper
        self.parameters = parameters
        self.maxConcurrent = maxConcurrent
        self.maxQueued = maxQueued
        admission = Admission(slots: maxConcurrent, queue: maxQueued)
        dummy = .argon2id(
            parameters, salt: try SecureRandom.bytes(Self.saltBytes), tag: try SecureRandom.bytes(Self.tagBytes))
    }

    /// The PHC string for `password` (normalised here): a fresh salt, this hasher's costs.
    public func hash(_ password: String) async throws -> String {
        let salt = try SecureRandom.bytes(Self.saltBytes)
        let input = Array(PasswordPolicy.normalised(password).utf8)
        let tag = try await run { [pepper, parameters] in
            try PasswordKDF.argon2id(input, salt: salt, parameters: parameters, pepper: pepper, tagBytes: Self.tagBytes)
        }
        return StoredPassword.argon2id(parameters, salt: salt, tag: tag).encoded
    }

    public enum Verification: Equatable, Sendable {
        case mismatch
        /// The password matches; `rehashed` is its new Argon2id hash when the stored one was
        /// imported or made with other costs (store it in place of the old one).
        case match(rehashed: String?)
    }

    /// Whether `password` matches `stored` (nil: the user does not exist; the same work is
    /// done and the answer is a mismatch). A stored hash that does not parse is a mismatch too,
    /// after the same work, and is reported by `StoredPassword(parsing:)` where it is written.
    public func verify(_ password: String, stored text: String?) async throws -> Verification {
        let input = Array(PasswordPolicy.normalised(password).utf8)
        let stored = text.flatMap { try? StoredPassword(parsing: $0) }
        let target = stored ?? dummy
        let matches = try await run { [pepper] in
            let tag = try PasswordKDF.tag(of: input, like: target, pepper: pepper)
            return constantTimeEqual(tag, Self.expectedTag(target))
        }
        guard matches, let stored else { return .mismatch }
        if case .argon2id(let costs, _, let tag) = stored, costs == parameters, tag.count == Self.tagBytes {
            return .match(rehashed: nil)
        }
        return .match(rehashed: try await hash(password))
    }

    private static func expectedTag(_ stored: StoredPassword) -> [UInt8] {
        switch stored {
        case .argon2id(_, _, let tag), .pbkdf2(_, _, _, let tag, _), .scrypt(_, _, _, _, let tag): return tag
        }
    }

    /// Runs `work` (one key derivation) on a dispatch thread once admitted.
    private func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await admission.enter()
        defer { admission.leave() }
        let result = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async { continuation.resume(with: Result { try work() }) }
        }
        derivations.add(1, ordering: .relaxed)
        return result
    }

    /// Key derivations this hasher has finished.
    public var derivationsFinished: Int { derivations.load(ordering: .relaxed) }

    /// Hashes running and waiting now (for metrics and tests).
    public var load: (running: Int, queued: Int) { admission.load }
}

public enum PasswordHasherError: Error, Equatable, Sendable, CustomStringConvertible {
    case busy
    public var description: String { "too many password checks are running; try again shortly" }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
}

/// A counting gate with a bounded waiting line: `enter` takes a slot, waits in line for one,
/// or throws `busy` when the line is full; `leave` hands the slot to the first in line.
final class Admission: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, any Error>] = []
    }
    private let state: Mutex<State>
    private let queue: Int
    private let slots: Int

    init(slots: Int, queue: Int) {
        state = Mutex(State(free: slots))
        self.queue = queue
        self.slots = slots
    }

    func enter() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enum Decision { case admitted, waiting, refused }
            let decision: Decision = state.withLock { state in
                if state.free > 0 {
                    state.free -= 1
                    return .admitted
                }
                guard state.waiting.count < queue else { return .refused }
                state.waiting.append(continuation)
                return .waiting
            }
            switch decision {
            case .admitted: continuation.resume()
            case .refused: continuation.resume(throwing: PasswordHasherError.busy)
            case .waiting: break // resumed by `leave`
            }
        }
    }

    func leave() {
        let next: CheckedContinuation<Void, any Error>? = state.withLock { state in
            if state.waiting.isEmpty {
                state.free += 1
                assert(state.free <= slots, "more slots free than exist")
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }

    var load: (running: Int, queued: Int) {
        state.withLock { (slots - $0.free, $0.waiting.count) }
    }
}
