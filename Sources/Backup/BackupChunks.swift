import AuditChain
import BinaryCoding
import Foundation
import Sealing

/// One sequence of chunk files: its file-name stem and the code bound into each chunk's seal
/// (a backup's two archives, a log segment's entries and their redacted keys).
struct ChunkStream: Equatable, Sendable {
    let name: String
    let code: UInt8

    static let log = ChunkStream(name: "log", code: 3)
    static let logKeys = ChunkStream(name: "log-keys", code: 4)
}

extension BackupArtefact {
    var stream: ChunkStream { ChunkStream(name: rawValue, code: code) }
}

/// Chunk files: an archive's records (key and value, length-prefixed, in key order) gathered
/// into about `targetRawBytes`, compressed as one LZ4 block and sealed with AES-256-GCM under
/// the backup's data key. A chunk file is the 12-byte nonce, then the sealed block and its tag;
/// the authenticated data binds it to its backup, archive, position, size and record count, so
/// a chunk moved to another backup, archive or place does not open.
enum BackupChunks {
    static let targetRawBytes = 4 << 20
    /// A chunk larger than this is refused unread (one record can take a chunk past the target).
    static let maxRawBytes: UInt32 = 64 << 20

    static func fileName(_ stream: ChunkStream, _ index: Int) -> String {
        "\(stream.name)-\(String(format: "%06d", index)).chunk"
    }

    static func associatedData(
        _ id: BackupID, _ stream: ChunkStream, index: Int, rawBytes: UInt32, records: UInt32
    ) -> [UInt8] {
        var writer = BinaryWriter(capacity: 48)
        writer.raw(Array("crm.backup.v1".utf8))
        writer.raw(id.bytes)
        writer.u8(stream.code)
        writer.u32(UInt32(index))
        writer.u32(rawBytes)
        writer.u32(records)
        return writer.bytes
    }

    /// The chunk file for `raw` (records already encoded).
    static func seal(
        _ raw: [UInt8], records: UInt32, _ id: BackupID, _ stream: ChunkStream, index: Int, cipher: AES256GCM
    ) throws -> [UInt8] {
        var compressed = [UInt8](repeating: 0, count: LZ4Block.bound(raw.count))
        let compressedCount = raw.withUnsafeBytes { input in
            compressed.withUnsafeMutableBytes { LZ4Block.compress(input, into: $0) }
        }
        guard let compressedCount else {
            throw BackupProblem("chunk \(index) of \(stream.name) did not compress")
        }
        compressed.removeSubrange(compressedCount...)
        let nonce = try SecureRandom.bytes(AES256GCM.nonceByteCount)
        let aad = associatedData(id, stream, index: index, rawBytes: UInt32(raw.count), records: records)
        var file = nonce + [UInt8](repeating: 0, count: compressed.count + AES256GCM.tagByteCount)
        try file.withUnsafeMutableBytes { output in
            try compressed.withUnsafeBytes { input in
                try nonce.withUnsafeBytes { nonceBytes in
                    try aad.withUnsafeBytes { aadBytes in
                        try cipher.seal(
                            input, nonce: nonceBytes, associatedData: aadBytes,
                            into: UnsafeMutableRawBufferPointer(rebasing: output[AES256GCM.nonceByteCount...]))
                    }
                }
            }
        }
        return file
    }

    /// The records of a chunk file, opened and decompressed; a named problem when it does not
    /// open (another key, backup, archive or place) or does not decompress to its size.
    static func open(
        _ file: [UInt8], _ chunk: BackupManifest.Chunk, _ id: BackupID, _ stream: ChunkStream, index: Int,
        cipher: AES256GCM
    ) throws -> [UInt8] {
        guard file.count >= AES256GCM.nonceByteCount + AES256GCM.tagByteCount, chunk.rawBytes <= maxRawBytes else {
            throw BackupProblem("\(chunk.file): too short, or too large a chunk")
        }
        let aad = associatedData(id, stream, index: index, rawBytes: chunk.rawBytes, records: chunk.records)
        let sealedCount = file.count - AES256GCM.nonceByteCount
        var compressed = [UInt8](repeating: 0, count: sealedCount - AES256GCM.tagByteCount)
        let authentic = try file.withUnsafeBytes { input in
            try aad.withUnsafeBytes { aadBytes in
                try compressed.withUnsafeMutableBytes { output in
                    try cipher.open(
                        UnsafeRawBufferPointer(rebasing: input[AES256GCM.nonceByteCount...]),
                        nonce: UnsafeRawBufferPointer(rebasing: input[..<AES256GCM.nonceByteCount]),
                        associatedData: aadBytes, into: output)
                }
            }
        }
        guard authentic else {
            throw BackupProblem(
                "\(chunk.file) does not open under this backup's data key (altered, or from another backup or place)")
        }
        guard
            let raw = compressed.withUnsafeBytes({ LZ4Block.decompress($0, originalCount: Int(chunk.rawBytes)) }),
            raw.count == Int(chunk.rawBytes)
        else { throw BackupProblem("\(chunk.file) does not decompress to its \(chunk.rawBytes) bytes") }
        return raw
    }

    /// Calls `body` with each record of an opened chunk; a named problem when they do not decode
    /// to the count the manifest gives.
    static func forEachRecord(
        in raw: [UInt8], _ chunk: BackupManifest.Chunk, _ body: ([UInt8], [UInt8]) throws -> Void
    ) throws {
        var reader = BinaryReader(raw)
        var count: UInt32 = 0
        while !reader.isAtEnd {
            guard let key = reader.blob(limit: raw.count), let value = reader.blob(limit: raw.count) else {
                throw BackupProblem("\(chunk.file): record \(count + 1) does not decode")
            }
            count += 1
            try body(key, value)
        }
        guard count == chunk.records else {
            throw BackupProblem("\(chunk.file) holds \(count) records, the manifest says \(chunk.records)")
        }
    }
}

/// Gathers one stream's records into chunk files in a backup's or segment's directory.
final class ChunkSink {
    let directory: String
    let stream: ChunkStream
    let id: BackupID
    let cipher: AES256GCM
    private var buffer = BinaryWriter(capacity: BackupChunks.targetRawBytes + 4096)
    private var records: UInt32 = 0
    private(set) var chunks: [BackupManifest.Chunk] = []

    let beforeEachChunk: @Sendable () -> Void

    init(
        directory: String, stream: ChunkStream, id: BackupID, cipher: AES256GCM,
        beforeEachChunk: @escaping @Sendable () -> Void = {}
    ) {
        self.directory = directory
        self.stream = stream
        self.beforeEachChunk = beforeEachChunk
        self.id = id
        self.cipher = cipher
    }

    func add(_ key: [UInt8], _ value: [UInt8]) throws {
        buffer.blob(key)
        buffer.blob(value)
        records += 1
        if buffer.bytes.count >= BackupChunks.targetRawBytes { try flush() }
    }

    /// Writes the last chunk; answers every chunk written.
    func finish() throws -> [BackupManifest.Chunk] {
        if records > 0 { try flush() }
        return chunks
    }

    private func flush() throws {
        beforeEachChunk()
        let raw = buffer.bytes
        precondition(raw.count <= Int(BackupChunks.maxRawBytes), "a chunk past its bound: one record is too large")
        let index = chunks.count
        let file = try BackupChunks.seal(raw, records: records, id, stream, index: index, cipher: cipher)
        let name = BackupChunks.fileName(stream, index)
        try BackupFiles.write(file, to: directory + "/" + name)
        chunks.append(
            BackupManifest.Chunk(
                file: name, storedBytes: UInt64(file.count), rawBytes: UInt32(raw.count), records: records,
                sha256: AuditChain.hex(HMACSHA256.sha256(file))))
        buffer = BinaryWriter(capacity: BackupChunks.targetRawBytes + 4096)
        records = 0
    }
}

/// A backup that does not hold, and what is wrong with it (files, sizes and ids only).
public struct BackupProblem: Error, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) { self.description = description }
}
