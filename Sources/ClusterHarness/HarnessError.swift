import Node

/// Loopback ports for the members tests and drills start (defined beside the restore drill).
public typealias LoopbackPorts = Node.LoopbackPorts

/// A harness failure: what went wrong and, where it helps, what to do.
public struct HarnessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
