import HeapModule

/// Timed events, earliest first. Events at the same time come out in the order they were
/// scheduled, so a run depends only on its seed.
struct EventQueue<Event> {
    private var heap = Heap<Scheduled>()
    private var scheduled: UInt64 = 0

    private struct Scheduled: Comparable {
        var time: UInt64
        var order: UInt64
        var event: Event

        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.order) < (b.time, b.order) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { (a.time, a.order) == (b.time, b.order) }
    }

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }

    mutating func schedule(_ event: Event, at time: UInt64) {
        scheduled += 1
        heap.insert(Scheduled(time: time, order: scheduled, event: event))
    }

    mutating func next() -> (time: UInt64, event: Event)? {
        heap.popMin().map { ($0.time, $0.event) }
    }
}
