import Synchronization
import Testing

@testable import Sealing

@Suite struct PrimitiveTests {
    @Test func sha256MatchesKnownAnswer() {
        #expect(
            HMACSHA256.sha256(Array("abc".utf8)).hexString
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func hmacMatchesKnownAnswer() {
        let key = SymmetricKey(copying: Array(0..<32))
        #expect(
            HMACSHA256.authenticate(Array("crm sealing known answer".utf8), key: key).hexString
                == "1e35e0cf3c50062d5bf98d64aa93575384e1b28bc17b9ddb307aed65a18b630d")
    }

    /// Test case 14 of the GCM specification (McGrew & Viega): zero key, zero IV, one zero block.
    @Test func aesGCMMatchesSpecificationTestCase14() throws {
        let cipher = AES256GCM(key: SymmetricKey(copying: [UInt8](repeating: 0, count: 32)))
        let nonce = [UInt8](repeating: 0, count: 12)
        let plaintext = [UInt8](repeating: 0, count: 16)
        var output = [UInt8](repeating: 0, count: 32)
        try plaintext.withUnsafeBytes { p in
            try nonce.withUnsafeBytes { n in
                try output.withUnsafeMutableBytes { o in
                    try cipher.seal(p, nonce: n, associatedData: UnsafeRawBufferPointer(start: nil, count: 0), into: o)
                }
            }
        }
        #expect(Array(output[0..<16]).hexString == "cea7403d4d606b6e074ec5d3baf39d18")
        #expect(Array(output[16...]).hexString == "d0d1c8a799996bf0265b98b5d48ab919")

        var reopened = [UInt8](repeating: 0xAA, count: 16)
        let authentic = try output.withUnsafeBytes { s in
            try nonce.withUnsafeBytes { n in
                try reopened.withUnsafeMutableBytes { o in
                    try cipher.open(s, nonce: n, associatedData: UnsafeRawBufferPointer(start: nil, count: 0), into: o)
                }
            }
        }
        #expect(authentic)
        #expect(reopened == plaintext)
    }

    @Test func failedAuthenticationZeroesTheOutput() throws {
        let cipher = AES256GCM(key: try SymmetricKey.generate())
        let nonce = try SecureRandom.bytes(12)
        let plaintext = Array("confidential".utf8)
        var sealed = [UInt8](repeating: 0, count: plaintext.count + 16)
        try plaintext.withUnsafeBytes { p in
            try nonce.withUnsafeBytes { n in
                try sealed.withUnsafeMutableBytes { o in
                    try cipher.seal(p, nonce: n, associatedData: UnsafeRawBufferPointer(start: nil, count: 0), into: o)
                }
            }
        }
        sealed[0] ^= 1
        var output = [UInt8](repeating: 0xAA, count: plaintext.count)
        let authentic = try sealed.withUnsafeBytes { s in
            try nonce.withUnsafeBytes { n in
                try output.withUnsafeMutableBytes { o in
                    try cipher.open(s, nonce: n, associatedData: UnsafeRawBufferPointer(start: nil, count: 0), into: o)
                }
            }
        }
        #expect(!authentic)
        #expect(output.allSatisfy { $0 == 0 })
    }

    @Test func lz4RoundTripsAndRejectsWrongLength() throws {
        let input = Array(String(repeating: "contact record ", count: 100).utf8)
        var output = [UInt8](repeating: 0, count: LZ4Block.bound(input.count))
        let count = try #require(
            input.withUnsafeBytes { i in output.withUnsafeMutableBytes { LZ4Block.compress(i, into: $0) } })
        #expect(count < input.count / 4)
        let block = Array(output[0..<count])
        #expect(block.withUnsafeBytes { LZ4Block.decompress($0, originalCount: input.count) } == input)
        #expect(block.withUnsafeBytes { LZ4Block.decompress($0, originalCount: input.count - 1) } == nil)
        #expect(block.withUnsafeBytes { LZ4Block.decompress($0, originalCount: input.count + 1) } == nil)
    }

    @Test func lz4RejectsMalformedBlocks() {
        let garbage: [UInt8] = [0xF0, 0xFF, 0xFF, 0xFF, 0x01, 0x02]
        #expect(garbage.withUnsafeBytes { LZ4Block.decompress($0, originalCount: 64) } == nil)
        #expect([UInt8]().withUnsafeBytes { LZ4Block.decompress($0, originalCount: 0) } == nil)
        var output = [UInt8](repeating: 0, count: 64)
        #expect(
            !garbage.withUnsafeBytes { input in output.withUnsafeMutableBytes { LZ4Block.decompress(input, into: $0) } }
        )
    }

    /// Arrays made through the stack and through the heap hold exactly what was written.
    @Test(arguments: [0, 1, ByteArray.maxStackBytes, ByteArray.maxStackBytes + 1])
    func byteArraysHoldWhatWasWritten(count: Int) {
        let made = ByteArray.make(count: count) { buffer in
            for index in 0..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: index &* 31) }
        }
        #expect(made == (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let sum = ByteArray.withScratch(byteCount: count) { scratch in
            scratch.initializeMemory(as: UInt8.self, repeating: 1)
            return scratch.reduce(0) { $0 + Int($1) }
        }
        #expect(sum == count)
    }

    /// The pool hands back what it was given, keeps at most one plus `maxSpare` idle objects,
    /// frees the surplus at once and the rest when it goes away: nothing leaks, nothing is
    /// freed twice.
    @Test func idlePoolKeepsABoundedNumberAndFreesEveryObjectOnce() {
        let freed = FreedObjects()
        let allocated = (0..<4).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8) }
        let addresses = allocated.map { UInt(bitPattern: $0) }
        do {
            let pool = IdlePool(maxSpare: 2) { object in freed.record(object) }
            for object in allocated { pool.give(object) }
            #expect(freed.addresses == [addresses[3]]) // slot + 2 spare kept, the fourth freed
            let taken = (0..<3).compactMap { _ in pool.take() }
            #expect(Set(taken) == Set(allocated[0..<3]))
            #expect(pool.take() == nil)
            for object in taken { pool.give(object) }
        }
        #expect(Set(freed.addresses) == Set(addresses))
        #expect(freed.addresses.count == addresses.count)
    }

    /// Streams are reused from a pool; each block must still decode on its own, with no
    /// dictionary carried over from the value compressed before it.
    @Test func reusedCompressionStreamsProduceIndependentBlocks() throws {
        let first = Array(String(repeating: "alpha beta gamma ", count: 40).utf8)
        let second = Array(String(repeating: "alpha beta gamma ", count: 20).utf8) + Array("delta".utf8)
        var blocks: [[UInt8]] = []
        for input in [first, second, first, second] {
            var output = [UInt8](repeating: 0, count: LZ4Block.bound(input.count))
            let count = try #require(
                input.withUnsafeBytes { i in output.withUnsafeMutableBytes { LZ4Block.compress(i, into: $0) } })
            blocks.append(Array(output[0..<count]))
        }
        for (block, input) in zip(blocks, [first, second, first, second]) {
            #expect(block.withUnsafeBytes { LZ4Block.decompress($0, originalCount: input.count) } == input)
        }
        #expect(blocks[0] == blocks[2])
        #expect(blocks[1] == blocks[3])
    }

    @Test func noncesAreUniqueAcrossRandomBlockRefills() throws {
        var seen = Set<[UInt8]>()
        let count = NonceSource.blockBytes / 12 * 5
        for _ in 0..<count {
            var nonce = [UInt8](repeating: 0, count: 12)
            try nonce.withUnsafeMutableBytes { try SecureRandom.fillNonce($0) }
            seen.insert(nonce)
        }
        #expect(seen.count == count)
        #expect(!seen.contains([UInt8](repeating: 0, count: 12)))
    }

    @Test func hexRoundTripsAndRejectsBadDigits() {
        let bytes: [UInt8] = [0x00, 0x7f, 0x80, 0xff]
        #expect(bytes.hexString == "007f80ff")
        #expect([UInt8](hexString: "007F80ff") == bytes)
        #expect([UInt8](hexString: "0g") == nil)
        #expect([UInt8](hexString: "abc") == nil)
    }
}

/// Records what an `IdlePool` frees (and really frees it).
final class FreedObjects: Sendable {
    private let list = Mutex<[UInt]>([])

    var addresses: [UInt] { list.withLock { $0 } }

    func record(_ object: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: object)
        list.withLock { $0.append(address) }
        object.deallocate()
    }
}
