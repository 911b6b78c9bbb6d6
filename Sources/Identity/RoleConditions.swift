import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// When a role may be used: with a second factor, from some address ranges, in some hours of a
/// time zone. A user's conditions are those of all their roles together (they intersect).
public struct RoleConditions: Equatable, Sendable {
    public var mfaRequired = false
    /// Address ranges, one list per role that limits them: the address must be in each list.
    public var ipRangeLists: [[IPRange]] = []
    /// Hours, one window per role that limits them: the time must be in each.
    public var hourWindows: [HoursWindow] = []

    public init() {}

    static func parse(_ tree: YAMLTree) throws -> RoleConditions {
        let entries = try tree.mapping("conditions", allowed: ["mfa", "ip_ranges", "hours"])
        var conditions = RoleConditions()
        if let mfa = entries["mfa"] {
            switch try mfa.scalar("conditions.mfa") {
            case "required": conditions.mfaRequired = true
            case "optional": conditions.mfaRequired = false
            default: throw RoleError("conditions.mfa is required or optional")
            }
        }
        if let list = entries["ip_ranges"] {
            let ranges = try list.sequence("conditions.ip_ranges").map { item in
                let text = try item.scalar("conditions.ip_ranges")
                guard let range = IPRange(text) else {
                    throw RoleError(
                        "conditions.ip_ranges: `\(text.prefix(64))` is not an address range such as 10.0.0.0/8")
                }
                return range
            }
            guard !ranges.isEmpty else { throw RoleError("conditions.ip_ranges: an empty list allows nothing") }
            conditions.ipRangeLists = [ranges]
        }
        if let hours = entries["hours"] {
            let text = try hours.scalar("conditions.hours")
            guard let window = HoursWindow(text) else {
                throw RoleError(
                    "conditions.hours is like \"Mon-Fri 07:00-20:00 Europe/Paris\" (days, hours, an IANA time zone)")
            }
            conditions.hourWindows = [window]
        }
        return conditions
    }

    /// Both sets of conditions at once: a second factor if either asks, every range list and
    /// every window.
    public func intersected(with other: RoleConditions) -> RoleConditions {
        var both = self
        both.mfaRequired = mfaRequired || other.mfaRequired
        both.ipRangeLists += other.ipRangeLists
        both.hourWindows += other.hourWindows
        return both
    }

    /// Why a session from `address` at `date`, with or without a second factor, may not use the
    /// roles (nil: it may).
    public func refusal(address: String?, at date: Date, mfa: Bool) -> String? {
        if mfaRequired && !mfa { return "a role needs a second factor" }
        for ranges in ipRangeLists where !(address.map { address in ranges.contains { $0.contains(address) } } ?? false)
        {
            return "a role is limited to some address ranges"
        }
        for window in hourWindows where !window.contains(date) { return "a role is limited to some hours" }
        return nil
    }
}

/// An IPv4 or IPv6 network in CIDR form.
public struct IPRange: Equatable, Sendable, CustomStringConvertible {
    let network: [UInt8]
    let prefix: Int
    public let description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let bytes = Self.address(String(parts[0])), let prefix = Int(parts[1]),
            (0...(bytes.count * 8)).contains(prefix), parts[1].allSatisfy(\.isNumber)
        else { return nil }
        network = Self.masked(bytes, prefix)
        self.prefix = prefix
        description = text
    }

    /// Whether `text` is an IPv4 or IPv6 address.
    public static func isAddress(_ text: String) -> Bool { address(text) != nil }

    public func contains(_ address: String) -> Bool {
        guard let bytes = Self.address(address), bytes.count == network.count else { return false }
        return Self.masked(bytes, prefix) == network
    }

    static func address(_ text: String) -> [UInt8]? {
        guard text.utf8.count <= 45 else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func masked(_ bytes: [UInt8], _ prefix: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = max(0, min(8, prefix - index * 8))
            return bits == 0 ? 0 : byte & UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
        }
    }
}

/// Days of the week and a span of local time in an IANA time zone, such as
/// "Mon-Fri 07:00-20:00 Asia/Shanghai"; a span that ends before it starts runs past midnight.
public struct HoursWindow: Equatable, Sendable, CustomStringConvertible {
    /// 1 = Sunday … 7 = Saturday (Gregorian calendar weekdays).
    let days: Set<Int>
    let startMinute: Int
    let endMinute: Int
    let timeZone: TimeZone
    public let description: String

    static let dayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]

    public init?(_ text: String) {
        let parts = text.split(separator: " ")
        guard parts.count == 3, text.utf8.count <= 128, let days = Self.days(String(parts[0])) else { return nil }
        let times = parts[1].split(separator: "-")
        guard times.count == 2, let start = Self.minute(String(times[0])), let end = Self.minute(String(times[1])),
            start != end, let zone = TimeZone(identifier: String(parts[2]))
        else { return nil }
        self.days = days
        startMinute = start
        endMinute = end
        timeZone = zone
        description = text
    }

    public func contains(_ date: Date) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.weekday, .hour, .minute], from: date)
        guard let weekday = parts.weekday, let hour = parts.hour, let minute = parts.minute else { return false }
        let now = hour * 60 + minute
        if startMinute < endMinute { return days.contains(weekday) && now >= startMinute && now < endMinute }
        // Past midnight: the evening of a listed day, or the early hours after one.
        let previous = weekday == 1 ? 7 : weekday - 1
        return (days.contains(weekday) && now >= startMinute) || (days.contains(previous) && now < endMinute)
    }

    private static func days(_ text: String) -> Set<Int>? {
        var days = Set<Int>()
        for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = piece.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(ends.count), let first = dayNames.firstIndex(of: String(ends[0])),
                let last = dayNames.firstIndex(of: String(ends.last!))
            else { return nil }
            // A range may wrap past Saturday (Sat-Sun, Fri-Mon).
            var day = first
            while true {
                days.insert(day + 1)
                if day == last { break }
                day = (day + 1) % 7
            }
        }
        return days
    }

    private static func minute(_ text: String) -> Int? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, parts.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isNumber) }),
            let hour = Int(parts[0]), let minute = Int(parts[1]), (0...24).contains(hour), (0..<60).contains(minute),
            hour * 60 + minute <= 24 * 60
        else { return nil }
        return hour * 60 + minute
    }
}
