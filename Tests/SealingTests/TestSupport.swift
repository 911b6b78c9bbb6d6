import Foundation

@testable import Sealing

/// A fresh directory under the system temp dir, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "crm-sealing-" + UUID().uuidString
        try! FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

func newDataKey(id: UInt32 = 1) throws -> DataKey {
    DataKey(id: id, key: try SymmetricKey.generate())
}

func seal(_ plaintext: [UInt8], key: DataKey, scope: UInt8 = 3, at place: [UInt8]) throws -> [UInt8] {
    try place.withUnsafeBytes { keyBytes in
        try SealedValue.seal(plaintext, key: key, location: .init(domain: 1, scope: scope, key: keyBytes))
    }
}

func open(
    _ sealed: [UInt8], scope: UInt8 = 3, at place: [UInt8], keys: [DataKey], retired: Set<UInt32> = []
) throws -> [UInt8] {
    try place.withUnsafeBytes { keyBytes in
        try SealedValue.open(sealed, location: .init(domain: 1, scope: scope, key: keyBytes)) { id in
            if let key = keys.first(where: { $0.id == id }) { return .available(key) }
            return retired.contains(id) ? .retired : .unknown
        }
    }
}
