import Foundation
import Synchronization

/// Certificates refused although the CA signed them: a leaked client or member certificate is
/// listed here and refused from the next reload on, without a restart and without waiting for
/// it to expire.
///
/// The file holds one entry per line: a certificate serial number in hex (as `openssl x509
/// -serial` prints it; colons and case are ignored) or an identity URI (`crm://client/app`,
/// `crm://member/4`). `#` starts a comment. It is re-read when it changes; a file that cannot
/// be read keeps the previous list (and says why).
public final class DenyList: Sendable {
    public struct Entries: Sendable, Equatable {
        public var serials: Set<String> = []
        public var identities: Set<PeerIdentity> = []

        public init() {}
    }

    public let path: String?
    private let state: Mutex<(entries: Entries, stamp: Date?)>

    /// `path` nil: nothing is denied.
    public init(path: String?) throws {
        self.path = path
        state = Mutex((Entries(), nil))
        if path != nil { try reloadIfChanged() }
    }

    public var entries: Entries { state.withLock { $0.entries } }

    /// Re-reads the file if its modification time changed; true if it did.
    @discardableResult
    public func reloadIfChanged() throws -> Bool {
        guard let path else { return false }
        let stamp = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
        guard stamp != state.withLock({ $0.stamp }) else { return false }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw DenyListError(path: path, problem: "cannot read it: \(error.localizedDescription)")
        }
        let parsed = try Self.parse(text, path: path)
        state.withLock { $0 = (parsed, stamp) }
        return true
    }

    static func parse(_ text: String, path: String) throws -> Entries {
        var entries = Entries()
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line =
                rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)
                ?? ""
            let entry = line.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty { continue }
            if entry.hasPrefix("crm://") {
                guard let identity = PeerIdentity(uri: entry) else {
                    throw DenyListError(
                        path: path,
                        problem:
                            "line \(number + 1): '\(entry)' is not a crm identity (crm://client/<name> or crm://member/<id>)"
                    )
                }
                entries.identities.insert(identity)
            } else {
                var serial = entry.lowercased().replacingOccurrences(of: ":", with: "")
                if serial.hasPrefix("serial=") { serial.removeFirst("serial=".count) }
                guard !serial.isEmpty, serial.count <= 64, serial.allSatisfy(\.isHexDigit) else {
                    throw DenyListError(
                        path: path,
                        problem: "line \(number + 1): '\(entry)' is neither a hex serial number nor a crm identity")
                }
                entries.serials.insert(Self.canonical(serial))
            }
        }
        return entries
    }

    /// Hex without leading zeros, lower case.
    static func canonical(_ hex: String) -> String {
        let trimmed = hex.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    /// Why a certificate with this serial and identity is refused, or nil.
    public func refusal(serial: some Sequence<UInt8>, identity: PeerIdentity?) -> String? {
        let entries = self.entries
        if entries.serials.isEmpty && entries.identities.isEmpty { return nil }
        let hex = Self.canonical(serial.map { String(format: "%02x", $0) }.joined())
        if entries.serials.contains(hex) { return "certificate serial \(hex) is on the deny list" }
        if let identity, entries.identities.contains(identity) { return "\(identity) is on the deny list" }
        return nil
    }
}

public struct DenyListError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var description: String { "deny list \(path): \(problem)" }
}
