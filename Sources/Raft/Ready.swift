/// Everything the node must do after feeding the core, in this order:
/// 1. send `messages` (may go at once, in parallel with the disk write);
/// 2. persist `snapshot`, `entries` (replacing persisted entries at the same or later
///    indexes) and `hardState`, synced to disk (a hard state whose only change is the commit
///    index may be saved without a sync, if it reaches the disk before the state applied from
///    it: see `DurableLogStore.mustSync`);
/// 3. send `messagesAfterPersist` (they promise what was just persisted: votes, acknowledgements);
/// 4. apply `snapshot`, then `committedEntries`, in order;
/// 5. call `advance(_:)` with this value.
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    public var entries: [Entry] = []
    public var snapshot: Snapshot?
    public var committedEntries: [Entry] = []
    public var messages: [Message] = []
    public var messagesAfterPersist: [Message] = []
    public var readStates: [ReadState] = []

    /// True if there is something to persist (otherwise the member skips the synced write).
    public var needsPersist: Bool { hardState != nil || !entries.isEmpty || snapshot != nil }
}
