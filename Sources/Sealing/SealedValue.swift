import CLibCrypto

/// Why a sealed value could not be opened. Every case means "no bytes are returned".
public enum SealFailure: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the header announces (or than a header needs).
    case truncated(expectedBytes: Int, actualBytes: Int)
    case unsupportedVersion(UInt8)
    case malformedHeader(String)
    /// The header names a data key this store never had (or lost).
    case unknownDataKey(UInt32)
    /// The header names a data key that was retired; the value should not exist any more.
    case retiredDataKey(UInt32)
    /// The header names a known key id, but the value was sealed with different key material.
    case wrongDataKey(UInt32)
    /// The value was sealed for another place (another key or column family): it was moved or swapped.
    case misplaced
    /// Authentication failed: the bytes were altered.
    case tampered
    case decompressionFailed
    case cipherFailure(String)

    public var description: String {
        switch self {
        case .truncated(let expected, let actual):
            return "sealed value truncated: \(actual) bytes present, \(expected) expected"
        case .unsupportedVersion(let version):
            return "sealed value has unsupported format version \(version)"
        case .malformedHeader(let why):
            return "sealed value header is malformed: \(why)"
        case .unknownDataKey(let id):
            return "sealed with data key \(id), which this store does not have"
        case .retiredDataKey(let id):
            return "sealed with data key \(id), which was retired"
        case .wrongDataKey(let id):
            return "sealed with a different key material under id \(id) (wrong key)"
        case .misplaced:
            return "sealed value belongs to another key or column family (moved or swapped)"
        case .tampered:
            return "sealed value failed authentication (altered bytes)"
        case .decompressionFailed:
            return "authenticated payload did not decompress"
        case .cipherFailure(let step):
            return "OpenSSL failed at \(step)"
        }
    }
}

/// The on-disk envelope of every value at rest.
///
///     offset size field
///          0    1 format version (1)
///          1    1 flags (bit 0: payload LZ4-compressed; other bits must be 0)
///          2    4 data key id (big-endian)
///          6    2 key check value (big-endian, see `DataKey`)
///          8    2 location tag: FNV-1a of the location, to tell "moved" from "altered"
///         10    4 sealed length: bytes after the header (ciphertext + 16-byte tag)
///         14   12 nonce, fresh from the CSPRNG for every seal
///         26    n ciphertext, then the 16-byte GCM tag
///
/// The associated data is the 26-byte header followed by the location (domain, scope, key), so
/// the ciphertext is bound to its header, its key id and its place: a value copied to another key
/// or column family fails authentication. A compressed payload is the original length (4 bytes,
/// big-endian) followed by the LZ4 block; the length is encrypted with the rest.
public enum SealedValue {
    public static let formatVersion: UInt8 = 1
    public static let headerByteCount = 26
    public static let overheadByteCount = headerByteCount + AES256GCM.tagByteCount
    /// Largest value accepted for sealing.
    public static let maxPlaintextBytes = 64 << 20
    /// Below this size compression is not attempted: LZ4 cannot win enough to pay for its length field.
    public static let minCompressibleBytes = 64

    /// A value is stored compressed only if that saves at least 1/8 of its size (the rule RocksDB
    /// applies to its blocks): a smaller saving does not pay for decompressing on every read.
    static func maxCompressedPayload(_ plaintextCount: Int) -> Int {
        plaintextCount - plaintextCount / 8
    }

    static let compressedFlag: UInt8 = 0x01
    static let knownFlags: UInt8 = compressedFlag

    /// The header fields of a sealed value (not authenticated until `open` succeeds).
    public struct Header: Equatable, Sendable {
        public let version: UInt8
        public let flags: UInt8
        public let keyID: UInt32
        public let keyCheck: UInt16
        public let locationTag: UInt16
        public let sealedLength: UInt32
        public var isCompressed: Bool { flags & SealedValue.compressedFlag != 0 }
    }

    /// Where a value lives, bound into its associated data.
    public struct Location {
        /// Which subsystem sealed it (storage, backup, ...), so envelopes never cross subsystems.
        public let domain: UInt8
        /// Subdivision within the domain (the column family for storage).
        public let scope: UInt8
        public let key: UnsafeRawBufferPointer

        public init(domain: UInt8, scope: UInt8, key: UnsafeRawBufferPointer) {
            self.domain = domain
            self.scope = scope
            self.key = key
        }

        var tag: UInt16 {
            let prime: UInt32 = 0x0100_0193
            var hash: UInt32 = 0x811C_9DC5
            hash = (hash ^ UInt32(domain)) &* prime
            hash = (hash ^ UInt32(scope)) &* prime
            for index in 0..<key.count { hash = (hash ^ UInt32(key[index])) &* prime }
            return UInt16(truncatingIfNeeded: hash ^ (hash >> 16))
        }
    }

    /// Compresses (when that makes it smaller) and seals `plaintext` under `key` for `location`.
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer,
        key: DataKey,
        location: Location
    ) throws -> [UInt8] {
        guard plaintext.count <= maxPlaintextBytes else {
            throw SealingError.inputTooLarge(bytes: plaintext.count, maximum: maxPlaintextBytes)
        }
        let sealed = try [UInt8](unsafeUninitializedCapacity: overheadByteCount + plaintext.count) { buffer, count in
            count = 0
            count = try seal(plaintext, key: key, location: location, into: UnsafeMutableRawBufferPointer(buffer))
        }
        return sealed
    }

    /// Bytes `seal(_:key:location:into:)` may need for a plaintext of `count` bytes.
    public static func sealedCapacity(forPlaintext count: Int) -> Int { overheadByteCount + count }

    /// Seals into caller-owned memory (at least `sealedCapacity(forPlaintext:)` bytes), for
    /// callers that reuse one buffer across many values; returns the sealed length.
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer,
        key: DataKey,
        location: Location,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws -> Int {
        guard plaintext.count <= maxPlaintextBytes else {
            throw SealingError.inputTooLarge(bytes: plaintext.count, maximum: maxPlaintextBytes)
        }
        precondition(buffer.count >= sealedCapacity(forPlaintext: plaintext.count), "seal buffer too small")
        let count = try sealInto(buffer, plaintext: plaintext, key: key, location: location)
        assert(count >= overheadByteCount && count <= overheadByteCount + plaintext.count)
        return count
    }

    public static func seal(_ plaintext: [UInt8], key: DataKey, location: Location) throws -> [UInt8] {
        try plaintext.withUnsafeBytes { bytes in try seal(bytes, key: key, location: location) }
    }

    private static func sealInto(
        _ buffer: UnsafeMutableRawBufferPointer,
        plaintext: UnsafeRawBufferPointer,
        key: DataKey,
        location: Location
    ) throws -> Int {
        let body = UnsafeMutableRawBufferPointer(rebasing: buffer[headerByteCount...])
        var flags: UInt8 = 0
        var payloadCount = plaintext.count
        if plaintext.count >= minCompressibleBytes {
            // The output must fit in the room of a worthwhile saving, length field included, or
            // LZ4 gives up (early, which is also cheaper).
            let room = UnsafeMutableRawBufferPointer(rebasing: body[4..<maxCompressedPayload(plaintext.count)])
            if let compressedCount = LZ4Block.compress(plaintext, into: room) {
                storeBigEndian(UInt32(plaintext.count), at: body.baseAddress!)
                payloadCount = 4 + compressedCount
                flags |= compressedFlag
            }
        }
        let header = Header(
            version: formatVersion, flags: flags, keyID: key.id, keyCheck: key.checkValue,
            locationTag: location.tag, sealedLength: UInt32(payloadCount + AES256GCM.tagByteCount))
        write(header, into: buffer)
        let nonce = UnsafeMutableRawBufferPointer(rebasing: buffer[14..<headerByteCount])
        try SecureRandom.fillNonce(nonce)
        let output = UnsafeMutableRawBufferPointer(rebasing: body[0..<(payloadCount + AES256GCM.tagByteCount)])
        let input =
            flags & compressedFlag != 0
            ? UnsafeRawBufferPointer(rebasing: body[0..<payloadCount]) // in place
            : plaintext
        try withAssociatedData(
            header: UnsafeRawBufferPointer(rebasing: buffer[0..<headerByteCount]), location: location
        ) {
            aad in
            try key.cipher.seal(input, nonce: UnsafeRawBufferPointer(nonce), associatedData: aad, into: output)
        }
        return headerByteCount + payloadCount + AES256GCM.tagByteCount
    }

    /// Reads the header without authenticating anything.
    public static func header(of sealed: UnsafeRawBufferPointer) throws -> Header {
        guard sealed.count >= headerByteCount else {
            throw SealFailure.truncated(expectedBytes: overheadByteCount, actualBytes: sealed.count)
        }
        let header = Header(
            version: sealed[0], flags: sealed[1],
            keyID: loadBigEndian(sealed, at: 2), keyCheck: UInt16(loadBigEndian16(sealed, at: 6)),
            locationTag: loadBigEndian16(sealed, at: 8), sealedLength: loadBigEndian(sealed, at: 10))
        guard header.version == formatVersion else { throw SealFailure.unsupportedVersion(header.version) }
        guard header.flags & ~knownFlags == 0 else {
            throw SealFailure.malformedHeader("unknown flags \(header.flags)")
        }
        guard header.sealedLength >= UInt32(AES256GCM.tagByteCount),
            header.sealedLength <= UInt32(maxPlaintextBytes + AES256GCM.tagByteCount)
        else { throw SealFailure.malformedHeader("sealed length \(header.sealedLength) out of range") }
        let expected = headerByteCount + Int(header.sealedLength)
        if sealed.count < expected { throw SealFailure.truncated(expectedBytes: expected, actualBytes: sealed.count) }
        if sealed.count > expected {
            throw SealFailure.malformedHeader("\(sealed.count - expected) bytes after the tag")
        }
        return header
    }

    /// Verifies and opens a sealed value. Either returns the original plaintext or throws:
    /// never returns unauthenticated bytes.
    public static func open(
        _ sealed: UnsafeRawBufferPointer,
        location: Location,
        keys: (UInt32) -> DataKeyLookup
    ) throws -> [UInt8] {
        let header = try header(of: sealed)
        let key: DataKey
        switch keys(header.keyID) {
        case .available(let found): key = found
        case .retired: throw SealFailure.retiredDataKey(header.keyID)
        case .unknown: throw SealFailure.unknownDataKey(header.keyID)
        }
        guard header.keyCheck == key.checkValue else { throw SealFailure.wrongDataKey(header.keyID) }
        guard header.locationTag == location.tag else { throw SealFailure.misplaced }

        let payloadCount = Int(header.sealedLength) - AES256GCM.tagByteCount
        if !header.isCompressed && payloadCount > ByteArray.maxStackBytes {
            // Large and stored as is: decrypt straight into the returned array.
            return try [UInt8](unsafeUninitializedCapacity: payloadCount) { buffer, count in
                try decrypt(sealed, key: key, location: location, into: UnsafeMutableRawBufferPointer(buffer))
                count = payloadCount
            }
        }
        return try ByteArray.withScratch(byteCount: payloadCount) { payload in
            try decrypt(sealed, key: key, location: location, into: payload)
            guard header.isCompressed else { return Array(UnsafeRawBufferPointer(payload)) }
            guard payload.count > 4 else { throw SealFailure.decompressionFailed }
            let original = Int(loadBigEndian(UnsafeRawBufferPointer(payload), at: 0) as UInt32)
            guard original <= maxPlaintextBytes else { throw SealFailure.decompressionFailed }
            let block = UnsafeRawBufferPointer(rebasing: payload[4...])
            return try ByteArray.make(count: original) { output in
                guard LZ4Block.decompress(block, into: output) else { throw SealFailure.decompressionFailed }
            }
        }
    }

    /// Authenticates and decrypts the payload of `sealed` (whose header was checked) into `output`.
    private static func decrypt(
        _ sealed: UnsafeRawBufferPointer,
        key: DataKey,
        location: Location,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        let authentic: Bool
        do {
            authentic = try withAssociatedData(
                header: UnsafeRawBufferPointer(rebasing: sealed[0..<headerByteCount]), location: location
            ) { aad in
                try key.cipher.open(
                    UnsafeRawBufferPointer(rebasing: sealed[headerByteCount...]),
                    nonce: UnsafeRawBufferPointer(rebasing: sealed[14..<headerByteCount]),
                    associatedData: aad, into: output)
            }
        } catch {
            throw SealFailure.cipherFailure("\(error)")
        }
        guard authentic else { throw SealFailure.tampered }
    }

    public static func open(_ sealed: [UInt8], location: Location, keys: (UInt32) -> DataKeyLookup) throws -> [UInt8] {
        try sealed.withUnsafeBytes { bytes in try open(bytes, location: location, keys: keys) }
    }

    // MARK: - Encoding helpers

    private static func write(_ header: Header, into buffer: UnsafeMutableRawBufferPointer) {
        buffer[0] = header.version
        buffer[1] = header.flags
        storeBigEndian(header.keyID, at: buffer.baseAddress! + 2)
        storeBigEndian16(header.keyCheck, at: buffer.baseAddress! + 6)
        storeBigEndian16(header.locationTag, at: buffer.baseAddress! + 8)
        storeBigEndian(header.sealedLength, at: buffer.baseAddress! + 10)
    }

    /// Associated data = header || domain || scope || key; built on the stack for small keys.
    private static func withAssociatedData<R>(
        header: UnsafeRawBufferPointer,
        location: Location,
        _ body: (UnsafeRawBufferPointer) throws -> R
    ) rethrows -> R {
        let count = headerByteCount + 2 + location.key.count
        return try withUnsafeTemporaryAllocation(byteCount: count, alignment: 8) { (aad) throws -> R in
            aad.copyMemory(from: header)
            aad[headerByteCount] = location.domain
            aad[headerByteCount + 1] = location.scope
            if location.key.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: aad[(headerByteCount + 2)...]).copyMemory(from: location.key)
            }
            return try body(UnsafeRawBufferPointer(aad))
        }
    }
}

@inline(__always)
func storeBigEndian(_ value: UInt32, at pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: value.bigEndian, as: UInt32.self)
}

@inline(__always)
func storeBigEndian16(_ value: UInt16, at pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: value.bigEndian, as: UInt16.self)
}

@inline(__always)
func loadBigEndian(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
    UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always)
func loadBigEndian16(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt16 {
    UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}
