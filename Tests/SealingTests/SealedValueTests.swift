import Testing

@testable import Sealing

@Suite struct SealedValueTests {
    let place = Array("contact/000042".utf8)

    @Test(arguments: [0, 1, 63, 64, 256, 16_384, 16_385, 65_536])
    func roundTripsValuesOfEverySize(size: Int) throws {
        let key = try newDataKey()
        for value in [randomBytes(size), [UInt8](repeating: 0x61, count: size)] {
            let sealed = try seal(value, key: key, at: place)
            #expect(try open(sealed, at: place, keys: [key]) == value)
        }
    }

    @Test func roundTripsValuesOverFourMebibytes() throws {
        let key = try newDataKey()
        let random = randomBytes(4 << 20 | 17)
        let text = Array(String(repeating: "Ada Lovelace, ada@example.com, +44 20 7946 0000\n", count: 100_000).utf8)
        for value in [random, text] {
            #expect(try open(try seal(value, key: key, at: place), at: place, keys: [key]) == value)
        }
    }

    @Test func compressesOnlyWhenItHelps() throws {
        let key = try newDataKey()
        let text = Array(String(repeating: "name=Grace Hopper;", count: 50).utf8)
        let sealedText = try seal(text, key: key, at: place)
        let header = try sealedText.withUnsafeBytes { try SealedValue.header(of: $0) }
        #expect(header.isCompressed)
        #expect(sealedText.count < text.count)

        let noise = randomBytes(900)
        let sealedNoise = try seal(noise, key: key, at: place)
        #expect(try !sealedNoise.withUnsafeBytes { try SealedValue.header(of: $0) }.isCompressed)
        #expect(sealedNoise.count == noise.count + SealedValue.overheadByteCount)
    }

    /// A value whose compression saves less than an eighth is stored as is, even though LZ4
    /// alone would have made it a little smaller; a bigger saving is kept.
    @Test func compressionIsKeptOnlyForASavingOfAtLeastAnEighth() throws {
        let key = try newDataKey()
        let slightlyCompressible = randomBytes(230) + [UInt8](repeating: 0x61, count: 26)
        var block = [UInt8](repeating: 0, count: LZ4Block.bound(256))
        let lz4Count = try #require(
            slightlyCompressible.withUnsafeBytes { input in
                block.withUnsafeMutableBytes { LZ4Block.compress(input, into: $0) }
            })
        #expect(4 + lz4Count < slightlyCompressible.count) // smaller, but not by an eighth
        #expect(4 + lz4Count > slightlyCompressible.count - slightlyCompressible.count / 8)
        let sealedSlight = try seal(slightlyCompressible, key: key, at: place)
        #expect(try !sealedSlight.withUnsafeBytes { try SealedValue.header(of: $0) }.isCompressed)
        #expect(try open(sealedSlight, at: place, keys: [key]) == slightlyCompressible)

        let halfRepeated = randomBytes(128) + [UInt8](repeating: 0x61, count: 128)
        let sealedHalf = try seal(halfRepeated, key: key, at: place)
        #expect(try sealedHalf.withUnsafeBytes { try SealedValue.header(of: $0) }.isCompressed)
        #expect(sealedHalf.count < halfRepeated.count)
        #expect(try open(sealedHalf, at: place, keys: [key]) == halfRepeated)
    }

    @Test func everySealUsesAFreshNonce() throws {
        let key = try newDataKey()
        let value = Array("same plaintext".utf8)
        let first = try seal(value, key: key, at: place)
        let second = try seal(value, key: key, at: place)
        #expect(first[14..<26] != second[14..<26])
        #expect(first != second)
    }

    @Test func alteredCiphertextOrTagIsTampered() throws {
        let key = try newDataKey()
        let sealed = try seal(randomBytes(100), key: key, at: place)
        for index in [SealedValue.headerByteCount, sealed.count / 2, sealed.count - 1] {
            var altered = sealed
            altered[index] ^= 0x04
            #expect(throws: SealFailure.tampered) { try open(altered, at: place, keys: [key]) }
        }
    }

    @Test func alteredHeaderIsReportedAndNeverOpened() throws {
        let key = try newDataKey()
        let sealed = try seal(randomBytes(100), key: key, at: place)
        var nonce = sealed
        nonce[20] ^= 1
        #expect(throws: SealFailure.tampered) { try open(nonce, at: place, keys: [key]) }
        var version = sealed
        version[0] = 9
        #expect(throws: SealFailure.unsupportedVersion(9)) { try open(version, at: place, keys: [key]) }
        var flags = sealed
        flags[1] = 0x80
        #expect(throws: SealFailure.malformedHeader("unknown flags 128")) { try open(flags, at: place, keys: [key]) }
    }

    @Test func truncatedValueIsTruncated() throws {
        let key = try newDataKey()
        let sealed = try seal(randomBytes(100), key: key, at: place)
        #expect(throws: SealFailure.truncated(expectedBytes: sealed.count, actualBytes: sealed.count - 1)) {
            try open(Array(sealed.dropLast()), at: place, keys: [key])
        }
        #expect(throws: SealFailure.truncated(expectedBytes: SealedValue.overheadByteCount, actualBytes: 10)) {
            try open(Array(sealed.prefix(10)), at: place, keys: [key])
        }
        #expect(throws: SealFailure.self) { try open(sealed + [0], at: place, keys: [key]) }
    }

    @Test func valueMovedToAnotherPlaceIsMisplaced() throws {
        let key = try newDataKey()
        let sealed = try seal(randomBytes(100), key: key, at: place)
        #expect(throws: SealFailure.misplaced) { try open(sealed, at: Array("contact/000043".utf8), keys: [key]) }
        #expect(throws: SealFailure.misplaced) { try open(sealed, scope: 4, at: place, keys: [key]) }
    }

    @Test func wrongUnknownAndRetiredKeysAreToldApart() throws {
        let key = try newDataKey(id: 7)
        let impostor = try newDataKey(id: 7)
        let sealed = try seal(randomBytes(100), key: key, at: place)
        #expect(throws: SealFailure.wrongDataKey(7)) { try open(sealed, at: place, keys: [impostor]) }
        #expect(throws: SealFailure.unknownDataKey(7)) { try open(sealed, at: place, keys: []) }
        #expect(throws: SealFailure.retiredDataKey(7)) { try open(sealed, at: place, keys: [], retired: [7]) }
    }

    @Test func oversizedPlaintextIsRefused() throws {
        let key = try newDataKey()
        let huge = [UInt8](repeating: 0, count: SealedValue.maxPlaintextBytes + 1)
        #expect(throws: SealingError.inputTooLarge(bytes: huge.count, maximum: SealedValue.maxPlaintextBytes)) {
            try seal(huge, key: key, at: place)
        }
    }
}
