import Sealing

/// Sealed values under a fixed test key: anything opens or is refused; a sealed value with any
/// one byte changed is refused; LZ4 blocks decompress to at most the size asked for.
enum SealingHarness {
    static let key = DataKey(id: 1, key: SymmetricKey(copying: [UInt8](repeating: 0x42, count: SymmetricKey.byteCount)))
    static let locationKey: [UInt8] = Array("k/fuzz".utf8)

    static func run(_ input: [UInt8]) {
        guard let mode = input.first else { return }
        let body = Array(input.dropFirst())
        locationKey.withUnsafeBytes { place in
            let location = SealedValue.Location(domain: 1, scope: 2, key: place)
            switch mode % 3 {
            case 0:
                _ = try? body.withUnsafeBytes { try SealedValue.header(of: $0) }
                if let opened = try? SealedValue.open(
                    body, location: location, keys: { $0 == 1 ? .available(key) : .unknown })
                {
                    precondition(opened.count <= SealedValue.maxPlaintextBytes, "opened \(opened.count) bytes")
                }
            case 1:
                guard body.count >= 2 else { return }
                let count = Int(body[0]) << 8 | Int(body[1])
                let block = Array(body.dropFirst(2))
                if let output = block.withUnsafeBytes({ LZ4Block.decompress($0, originalCount: count) }) {
                    precondition(output.count == count, "LZ4 gave \(output.count) bytes for \(count)")
                }
            default:
                guard body.count >= 1,
                    let sealed = try? SealedValue.seal(Array(body.dropFirst()), key: key, location: location)
                else { return }
                precondition(
                    (try? SealedValue.open(sealed, location: location, keys: { _ in .available(key) }))
                        == Array(body.dropFirst()),
                    "a sealed value does not open to its plaintext")
                var altered = sealed
                let position = Int(body[0]) % altered.count
                altered[position] ^= 0x01 | body[0]
                precondition(
                    (try? SealedValue.open(altered, location: location, keys: { _ in .available(key) })) == nil,
                    "a sealed value with byte \(position) changed opened")
            }
        }
    }
}
