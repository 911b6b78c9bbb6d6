import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Ports for listeners on 127.0.0.1 that tests and drills start (a restore drill's member too).
public enum LoopbackPorts {
    private static let handedOut = Mutex<Set<Int>>([])

    /// A port that binds now, never the same one twice in this process, and below the kernel's
    /// ephemeral range: members dialling peers that are not up yet take ephemeral ports, and one
    /// of those must never take a port a listener is about to bind.
    public static func reserve() throws -> Int {
        let low = 20_000
        let high = max(ephemeralRangeStart, low + 1)
        for _ in 0..<1000 {
            let port = Int.random(in: low..<high)
            guard handedOut.withLock({ !$0.contains(port) }), bindsNow(port) else { continue }
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw LoopbackPortsExhausted(description: "no free port found on 127.0.0.1 in \(low)..<\(high)")
    }

    /// The first port of the kernel's ephemeral range (32768 when it cannot be read).
    static let ephemeralRangeStart: Int = {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) }
            ?? 32_768
    }()

    private static func bindsNow(_ port: Int) -> Bool {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return bound == 0
    }
}

public struct LoopbackPortsExhausted: Error, CustomStringConvertible {
    public let description: String
}
