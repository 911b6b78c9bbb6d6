import Synchronization

/// Idle C objects (cipher contexts, compression streams) kept for reuse by any thread.
///
/// The first idle object sits in a lock-free slot: taking it and giving it back cost one atomic
/// operation each, which is the whole cost in the common, uncontended case. Up to `maxSpare` more
/// wait in a list under a lock for concurrent callers; beyond that, returned objects are freed.
final class IdlePool: Sendable {
    /// Address of the idle object in the fast slot, or 0.
    private let slot = Atomic<UInt>(0)
    private let spare = Mutex<[UInt]>([])
    private let maxSpare: Int
    private let free: @Sendable (UnsafeMutableRawPointer) -> Void

    init(maxSpare: Int, free: @escaping @Sendable (UnsafeMutableRawPointer) -> Void) {
        precondition(maxSpare >= 0)
        self.maxSpare = maxSpare
        self.free = free
    }

    /// An idle object, or nil when the caller must make one.
    func take() -> UnsafeMutableRawPointer? {
        let fast = slot.exchange(0, ordering: .acquiring)
        if fast != 0 { return UnsafeMutableRawPointer(bitPattern: fast) }
        return spare.withLock { $0.popLast() }.flatMap { UnsafeMutableRawPointer(bitPattern: $0) }
    }

    /// Returns an object taken from (or made for) this pool; the caller must not use it after.
    func give(_ object: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: object)
        if slot.compareExchange(expected: 0, desired: address, ordering: .releasing).exchanged { return }
        let kept = spare.withLock { list -> Bool in
            guard list.count < maxSpare else { return false }
            list.append(address)
            return true
        }
        if !kept { free(object) }
    }

    deinit {
        let idle = [slot.exchange(0, ordering: .acquiring)] + spare.withLock { $0 }
        for address in idle {
            if let object = UnsafeMutableRawPointer(bitPattern: address) { free(object) }
        }
    }
}
