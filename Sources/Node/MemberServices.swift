import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// One part of the member run by the member's `ServiceGroup`: `start` when the group runs it
/// (binding a listener, starting a timer), `stop` when the group shuts it down gracefully. The
/// group shuts its services down one at a time in the reverse of their start order, so the order
/// of `NodeRuntime.services` is the member's whole start and stop order.
struct ComponentService: Service, CustomStringConvertible {
    let description: String
    let startup: StartupLatch
    let logger: Logger
    let start: @Sendable () async throws -> Void
    let stop: @Sendable () async -> Void

    func run() async throws {
        do {
            try await start()
        } catch {
            let failure = StartupError(service: description, underlying: error)
            startup.fail(failure)
            throw failure
        }
        startup.arrive(description)
        // Returns at graceful shutdown; throws (and still stops) when the group is cancelled.
        try? await gracefulShutdown()
        logger.info("stopping", metadata: ["service": "\(description)"])
        await stop()
    }
}

/// Work done now and then until graceful shutdown: the integrity check, the TLS reloader.
struct PeriodicService: Service, CustomStringConvertible {
    let description: String
    let startup: StartupLatch
    let initialDelay: Duration
    /// Nil: once only.
    let interval: Duration?
    let work: @Sendable () async -> Void

    var runsOnce: Bool { interval == nil }

    func run() async throws {
        startup.arrive(description)
        let (initialDelay, interval, work) = (self.initialDelay, self.interval, self.work)
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: initialDelay)
            while !Task.isCancelled {
                await work()
                guard let interval else { return }
                try await Task.sleep(for: interval)
            }
        }
    }
}

/// Lets `NodeRuntime.start` (the in-process form used by tests) return once every service has
/// started, or throw the first one's failure.
final class StartupLatch: Sendable {
    private struct State {
        var waiting: Set<String>
        var failure: (any Error)?
        var continuation: CheckedContinuation<Void, any Error>?
    }
    private let state = Mutex(State(waiting: []))

    /// Names every service the group will run (before it runs them).
    func expect(_ services: [String]) {
        state.withLock { state in
            precondition(state.waiting.isEmpty, "services are expected once")
            state.waiting = Set(services)
        }
    }

    func arrive(_ service: String) {
        let resume = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.waiting.remove(service)
            guard state.waiting.isEmpty, state.failure == nil else { return nil }
            defer { state.continuation = nil }
            return state.continuation
        }
        resume?.resume()
    }

    func fail(_ failure: StartupError) {
        let resume = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard state.failure == nil else { return nil }
            state.failure = failure
            defer { state.continuation = nil }
            return state.continuation
        }
        resume?.resume(throwing: failure)
    }

    /// Waits for every service to start; throws the first failure.
    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state -> Result<Void, any Error>? in
                if let failure = state.failure { return .failure(failure) }
                if state.waiting.isEmpty { return .success(()) }
                state.continuation = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }
}

/// A service that could not start: which, and why (the underlying error's text first, so that
/// operators see the same message as before).
public struct StartupError: Error, CustomStringConvertible {
    public let service: String
    public let underlying: any Error
    public var description: String { "\(underlying) (while starting \(service))" }
}

/// Runs blocking work on a thread of its own (a full read of the store must not hold a thread of
/// the concurrency pool); nil if the task is cancelled first, the work then finishing unobserved.
func onOwnThread<T: Sendable>(name: String, _ work: @escaping @Sendable () -> T) async -> T? {
    let once = Mutex<CheckedContinuation<T?, Never>?>(nil)
    return await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            once.withLock { $0 = continuation }
            let thread = Thread {
                let value = work()
                once.withLock { $0.take() }?.resume(returning: value)
            }
            thread.name = name
            thread.start()
        }
    } onCancel: {
        once.withLock { $0.take() }?.resume(returning: nil)
    }
}
