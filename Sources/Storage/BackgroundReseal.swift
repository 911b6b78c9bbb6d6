import Foundation
import Logging
import Synchronization

/// Runs the re-seal pass on its own thread, a chunk at a time with a pause between chunks so
/// that foreground traffic keeps priority, reporting progress after each chunk.
public final class BackgroundReseal: Sendable {
    private let engine: StorageEngine
    private let chunk: Int
    private let pause: Duration
    private let onProgress: @Sendable (ResealProgress) -> Void
    private let stopRequested = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let outcome = Mutex<Result<ResealProgress?, any Error>?>(nil)

    public init(
        engine: StorageEngine, chunk: Int = StorageEngine.defaultResealChunk, pause: Duration = .milliseconds(2),
        onProgress: @escaping @Sendable (ResealProgress) -> Void = { _ in }
    ) {
        self.engine = engine
        self.chunk = chunk
        self.pause = pause
        self.onProgress = onProgress
    }

    /// Starts the thread; call once.
    public func start() {
        let (exchanged, _) = started.compareExchange(expected: false, desired: true, ordering: .relaxed)
        precondition(exchanged, "BackgroundReseal.start() called twice")
        let thread = Thread { [self] in
            let result = Result { try run() }
            if case .failure(let error) = result {
                engine.logger.error("background re-seal stopped", metadata: ["error": "\(error)"])
            }
            outcome.withLock { $0 = result }
            finished.signal()
        }
        thread.name = "crm-reseal"
        thread.start()
    }

    private func run() throws -> ResealProgress? {
        var last: ResealProgress?
        while !stopRequested.load(ordering: .relaxed), let step = try engine.resealStep(maxItems: chunk) {
            last = step
            onProgress(step)
            if step.passComplete { break }
            let pauseMicros = pause.components.seconds * 1_000_000 + pause.components.attoseconds / 1_000_000_000_000
            if pauseMicros > 0 { usleep(UInt32(min(pauseMicros, 1_000_000))) }
        }
        return last
    }

    /// Asks the thread to stop after the current chunk; the position is already durable.
    public func stop() { stopRequested.store(true, ordering: .relaxed) }

    /// Waits until the thread has ended; returns the last progress or rethrows its error.
    @discardableResult
    public func wait() throws -> ResealProgress? {
        precondition(started.load(ordering: .relaxed), "BackgroundReseal.wait() before start()")
        finished.wait()
        finished.signal()
        return try outcome.withLock { $0 }!.get()
    }
}
