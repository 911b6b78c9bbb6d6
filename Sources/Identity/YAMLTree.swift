import Yams

/// A parsed YAML document read strictly: a mapping's keys are checked against those allowed,
/// duplicate keys are refused, and every error names where it is.
struct YAMLTree {
    let node: Yams.Node

    static func parse(_ text: String) throws -> YAMLTree {
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch { throw RoleError("not valid YAML") }
        guard let root else { throw RoleError("the document is empty") }
        return YAMLTree(node: root)
    }

    func scalar(_ place: String) throws -> String {
        guard case .scalar(let scalar) = node else { throw RoleError("\(place) must be a single value") }
        return scalar.string
    }

    func sequence(_ place: String) throws -> [YAMLTree] {
        guard case .sequence(let items) = node else { throw RoleError("\(place) must be a list") }
        guard items.count <= 1024 else { throw RoleError("\(place) holds at most 1024 items") }
        return items.map(YAMLTree.init)
    }

    /// The mapping's entries in document order (keys must be single values, each once).
    func entries(_ place: String) throws -> [(String, YAMLTree)] {
        guard case .mapping(let mapping) = node else { throw RoleError("\(place) must be a mapping") }
        guard mapping.count <= 1024 else { throw RoleError("\(place) holds at most 1024 entries") }
        var seen = Set<String>()
        return try mapping.map { key, value in
            guard case .scalar(let scalar) = key else { throw RoleError("\(place): keys must be single values") }
            guard seen.insert(scalar.string).inserted else {
                throw RoleError("\(place): `\(scalar.string.prefix(64))` appears twice")
            }
            return (scalar.string, YAMLTree(node: value))
        }
    }

    func mapping(_ place: String) throws -> [String: YAMLTree] {
        Dictionary(uniqueKeysWithValues: try entries(place))
    }

    func mapping(_ place: String, allowed: Set<String>) throws -> [String: YAMLTree] {
        let entries = try mapping(place)
        if let unknown = entries.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw RoleError(
                "\(place): `\(unknown.prefix(64))` is not one of \(allowed.sorted().joined(separator: ", "))")
        }
        return entries
    }
}
