import Foundation

/// Where an address is, from an operator's CSV file (`crm.geo_file`): one network per line,
/// `cidr,country,latitude,longitude` (`#` starts a comment). The longest matching prefix wins.
/// The node reaches no geolocation service; without a file no place is known.
public struct GeoTable: Sendable {
    public struct Place: Equatable, Sendable {
        public var country: String
        public var latitude: Double
        public var longitude: Double

        public init(country: String, latitude: Double, longitude: Double) {
            self.country = country
            self.latitude = latitude
            self.longitude = longitude
        }

        /// The great-circle distance to `other` in kilometres (haversine, mean Earth radius).
        public func kilometres(to other: Place) -> Double {
            let radians = Double.pi / 180
            let dLatitude = (other.latitude - latitude) * radians
            let dLongitude = (other.longitude - longitude) * radians
            let a =
                sin(dLatitude / 2) * sin(dLatitude / 2)
                + cos(latitude * radians) * cos(other.latitude * radians) * sin(dLongitude / 2) * sin(dLongitude / 2)
            return 6_371.0 * 2 * atan2(a.squareRoot(), (1 - a).squareRoot())
        }
    }

    public enum LoadError: Error, CustomStringConvertible {
        case line(Int, String)
        case tooLarge

        public var description: String {
            switch self {
            case .line(let number, let why): "geo file line \(number): \(why)"
            case .tooLarge: "the geo file holds more than \(GeoTable.maxNetworks) networks"
            }
        }
    }

    static let maxNetworks = 4_000_000
    /// Networks by address length (4 or 16) and prefix length, longest first.
    private var byPrefix: [(length: Int, prefix: Int, places: [[UInt8]: Place])] = []
    public private(set) var count = 0

    public init() {}

    public init(csv text: String) throws {
        var tables: [Int: [Int: [[UInt8]: Place]]] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            let columns = trimmed.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard columns.count == 4 else {
                throw LoadError.line(index + 1, "expected cidr,country,latitude,longitude")
            }
            guard let range = IPRange(columns[0]) else { throw LoadError.line(index + 1, "not a network in CIDR form") }
            let country = columns[1].uppercased()
            guard country.count == 2, country.allSatisfy({ $0.isASCII && $0.isLetter }) else {
                throw LoadError.line(index + 1, "the country is a two-letter code")
            }
            guard let latitude = Double(columns[2]), (-90...90).contains(latitude), let longitude = Double(columns[3]),
                (-180...180).contains(longitude)
            else { throw LoadError.line(index + 1, "latitude and longitude are degrees") }
            guard count < Self.maxNetworks else { throw LoadError.tooLarge }
            tables[range.network.count, default: [:]][range.prefix, default: [:]][range.network] = Place(
                country: country, latitude: latitude, longitude: longitude)
            count += 1
        }
        for (length, prefixes) in tables {
            for (prefix, places) in prefixes { byPrefix.append((length, prefix, places)) }
        }
        byPrefix.sort { $0.prefix > $1.prefix }
    }

    public static func load(path: String) throws -> GeoTable {
        try GeoTable(csv: String(contentsOfFile: path, encoding: .utf8))
    }

    /// The place of `address`, or nil when it is no address or no network holds it.
    public func place(of address: String) -> Place? {
        guard let bytes = IPRange.address(address) else { return nil }
        for table in byPrefix where table.length == bytes.count {
            if let place = table.places[IPRange.masked(bytes, table.prefix)] { return place }
        }
        return nil
    }
}
