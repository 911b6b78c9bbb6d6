import ArgumentParser
import Foundation
import Logging
import Sealing
import Storage

/// Raw RocksDB versus the sealed engine on identical options, same keys, same values.
struct StorageBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Raw RocksDB versus the sealed storage engine: batched puts, synced puts, random gets.",
        discussion: """
            Both engines use the same RocksDB options (StorageOptions defaults) in fresh directories.
            The last line is `storage sealed/raw: put=R1 synced_put=R2 get=R3`.
            """)

    @Option(help: "Keys written by the batched-put phase (and read by the get phase).")
    var keys = 200_000

    @Option(help: "Puts per write batch in the batched-put phase.")
    var batch = 100

    @Option(help: "Random gets per engine.")
    var gets = 200_000

    @Option(help: "Synced single puts per engine.")
    var syncedPuts = 1_000

    @Option(help: "Value size in bytes.")
    var valueBytes = 256

    @Option(help: "Value content: 'record' (CRM-like text with random fields) or 'random' (incompressible).")
    var values = "record"

    @Option(help: "Scratch directory (default: a new directory under the system temp dir, removed afterwards).")
    var directory: String?

    func validate() throws {
        guard keys > 0, batch > 0, gets > 0, syncedPuts > 0 else { throw ValidationError("counts must be positive") }
        guard batch <= 10_000 else { throw ValidationError("--batch must be at most 10000") }
        guard (1...(1 << 20)).contains(valueBytes) else { throw ValidationError("--value-bytes must be 1...1048576") }
        guard ["record", "random"].contains(values) else {
            throw ValidationError("--values must be 'record' or 'random'")
        }
    }

    func run() throws {
        let scratch = directory ?? (NSTemporaryDirectory() + "crm-bench-storage-" + UUID().uuidString)
        try FileManager.default.createDirectory(
            atPath: scratch, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: scratch) } }

        let workload = Workload(
            keys: keys, gets: gets, syncedPuts: syncedPuts, valueBytes: valueBytes,
            recordLike: values == "record")
        print(
            "storage benchmark: \(valueBytes)-byte \(values) values, \(keys) keys in batches of \(batch), "
                + "\(gets) random gets, \(syncedPuts) synced puts; RocksDB options: StorageOptions defaults")

        let raw = try RawStore(path: scratch + "/raw")
        var logger = Logger(label: "crm.bench")
        logger.logLevel = .warning
        let masterKey = try FileMasterKeyProvider.generateKeyFile(at: scratch + "/master.key")
        let sealed = try StorageEngine.open(path: scratch + "/sealed", masterKey: masterKey, logger: logger)
        defer {
            raw.close()
            sealed.close()
        }
        let targets: [any BenchTarget] = [raw, SealedStore(engine: sealed)]

        // Every phase alternates the two stores in small slices (a batch, a thousand gets, one
        // synced put), swapping which goes first each slice, so that drift in the machine's speed
        // (frequency, neighbours, page cache) lands on both sides equally.
        var results = try batchedPuts(targets, workload)
        for target in targets { try target.settle() }
        results += try randomGets(targets, workload)
        results += try synced(targets, workload)
        report(results)
    }

    private func progress(_ message: String) {
        FileHandle.standardError.write(Data("… \(message)\n".utf8))
    }

    /// Runs `slice` for every index on both targets alternately; returns the seconds spent per target.
    private func alternating(
        _ targets: [any BenchTarget], slices: Int,
        _ slice: (_ target: Int, _ index: Int) throws -> Void
    ) rethrows -> [Double] {
        let clock = ContinuousClock()
        var spent = [Duration](repeating: .zero, count: targets.count)
        for index in 0..<slices {
            let order = index % 2 == 0 ? Array(targets.indices) : targets.indices.reversed()
            for target in order {
                let started = clock.now
                try slice(target, index)
                spent[target] += clock.now - started
            }
            if index > 0, index % max(1, slices / 4) == 0 { progress("\(index * 100 / slices)%") }
        }
        return spent.map(\.seconds)
    }

    private func batchedPuts(_ targets: [any BenchTarget], _ workload: Workload) throws -> [PhaseResult] {
        progress("\(workload.keys) puts per store in batches of \(batch)")
        // Built before timing: only the stores' work is measured.
        let batches = stride(from: 0, to: workload.keys, by: batch).map { start in
            (start..<min(start + batch, workload.keys)).map { (workload.key($0), workload.value($0)) }
        }
        let seconds = try alternating(targets, slices: batches.count) { target, index in
            try targets[target].putBatch(batches[index])
        }
        return targets.indices.map {
            PhaseResult(
                engine: targets[$0].name, phase: "put (batched, unsynced)", operations: workload.keys,
                seconds: seconds[$0], latenciesNanos: [])
        }
    }

    private func randomGets(_ targets: [any BenchTarget], _ workload: Workload) throws -> [PhaseResult] {
        progress("\(workload.gets) random gets per store")
        var generator = SplitMix64(seed: 42)
        let keys = (0..<workload.gets).map { _ in workload.key(Int(generator.next() % UInt64(workload.keys))) }
        let sliceSize = 1000
        var latencies = [[UInt64]](repeating: [], count: targets.count)
        var found = [Int](repeating: 0, count: targets.count)
        let clock = ContinuousClock()
        let seconds = try alternating(targets, slices: (keys.count + sliceSize - 1) / sliceSize) { target, index in
            for key in keys[(index * sliceSize)..<min(keys.count, (index + 1) * sliceSize)] {
                let before = clock.now
                if try targets[target].get(key) { found[target] += 1 }
                latencies[target].append((clock.now - before).nanoseconds)
            }
        }
        for target in targets.indices where found[target] != workload.gets {
            throw ValidationError(
                "\(targets[target].name) found \(found[target]) of \(workload.gets) keys: the store lost data")
        }
        return targets.indices.map {
            PhaseResult(
                engine: targets[$0].name, phase: "get (random)", operations: workload.gets,
                seconds: seconds[$0], latenciesNanos: latencies[$0])
        }
    }

    private func synced(_ targets: [any BenchTarget], _ workload: Workload) throws -> [PhaseResult] {
        progress("\(workload.syncedPuts) synced puts per store")
        let items = (0..<workload.syncedPuts).map {
            (workload.key(workload.keys + $0), workload.value(workload.keys + $0))
        }
        var latencies = [[UInt64]](repeating: [], count: targets.count)
        let clock = ContinuousClock()
        let seconds = try alternating(targets, slices: items.count) { target, index in
            let before = clock.now
            try targets[target].putSynced(items[index].0, items[index].1)
            latencies[target].append((clock.now - before).nanoseconds)
        }
        return targets.indices.map {
            PhaseResult(
                engine: targets[$0].name, phase: "put (synced, one per write)", operations: workload.syncedPuts,
                seconds: seconds[$0], latenciesNanos: latencies[$0])
        }
    }

    private func report(_ results: [PhaseResult]) {
        print(
            padded("engine", 8) + padded("phase", 30) + padded("ops", 9) + padded("seconds", 9)
                + padded("ops/s", 11) + padded("p50 µs", 9) + "p99 µs")
        for result in results {
            print(
                padded(result.engine, 8) + padded(result.phase, 30) + padded("\(result.operations)", 9)
                    + padded(formatted(result.seconds, decimals: 3), 9)
                    + padded(formatted(result.operationsPerSecond, decimals: 0), 11)
                    + padded(result.percentileMicros(0.50).map { formatted($0, decimals: 1) } ?? "-", 9)
                    + (result.percentileMicros(0.99).map { formatted($0, decimals: 1) } ?? "-"))
        }
        func ratio(_ phase: String) -> String {
            let raw = results.first { $0.engine == "raw" && $0.phase.hasPrefix(phase) }!
            let sealed = results.first { $0.engine == "sealed" && $0.phase.hasPrefix(phase) }!
            return formatted(sealed.operationsPerSecond / raw.operationsPerSecond, decimals: 2)
        }
        print("storage sealed/raw: put=\(ratio("put (batched")) synced_put=\(ratio("put (synced")) get=\(ratio("get"))")
    }
}

/// The keys and values both engines see: same sequence, deterministic.
struct Workload {
    let keys: Int
    let gets: Int
    let syncedPuts: Int
    let valueBytes: Int
    let recordLike: Bool

    /// Opaque 8-byte keys in a scattered order (a bijection of the index), as ids would arrive.
    func key(_ index: Int) -> [UInt8] {
        let scattered = UInt64(index) &* 0x9E37_79B9_7F4A_7C15
        return withUnsafeBytes(of: scattered.bigEndian) { Array($0) }
    }

    func value(_ index: Int) -> [UInt8] {
        var generator = SplitMix64(seed: UInt64(index) &+ 1)
        if !recordLike {
            return (0..<valueBytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        }
        let digits = { (count: Int) in (0..<count).map { _ in String(generator.next() % 10) }.joined() }
        let record =
            "{\"id\":\"c\(digits(12))\",\"name\":\"Contact \(digits(6))\",\"email\":\"user\(digits(8))@example.com\","
            + "\"phone\":\"+1\(digits(10))\",\"company\":\"Company \(digits(5))\",\"stage\":\"qualified\","
            + "\"owner\":\"u\(digits(4))\",\"notes\":\""
        var bytes = Array(record.utf8)
        while bytes.count < valueBytes - 2 { bytes.append(UInt8(ascii: "a") + UInt8(generator.next() % 26)) }
        bytes = Array(bytes.prefix(valueBytes - 2)) + Array("\"}".utf8)
        return Array(bytes.prefix(valueBytes))
    }
}

protocol BenchTarget {
    var name: String { get }
    func putBatch(_ items: [([UInt8], [UInt8])]) throws
    func putSynced(_ key: [UInt8], _ value: [UInt8]) throws
    /// True if the key was found (and, for the sealed engine, verified).
    func get(_ key: [UInt8]) throws -> Bool
    /// Flushes memtables, compacts the data into one sorted run and waits for background work to
    /// finish, so that the next phase starts quiet and both stores read from the same shape of
    /// LSM tree (otherwise one store may have an extra L0 file to consult on every read, only
    /// because its memtable happened to fill once more).
    func settle() throws
}

/// RocksDB with the engine's options and nothing else: no sealing, no compression.
final class RawStore: BenchTarget {
    let name = "raw"
    private let database: RocksDatabase

    init(path: String) throws {
        database = try RocksDatabase(path: path, options: StorageOptions())
    }

    func putBatch(_ items: [([UInt8], [UInt8])]) throws {
        let batch = RocksBatch(database: database)
        for (key, value) in items { batch.put(.stateMachine, key: key, value: value) }
        try database.write(batch, durability: .buffered)
    }

    func putSynced(_ key: [UInt8], _ value: [UInt8]) throws {
        let batch = RocksBatch(database: database)
        batch.put(.stateMachine, key: key, value: value)
        try database.write(batch, durability: .synced)
    }

    func get(_ key: [UInt8]) throws -> Bool {
        // Copy the value out, as any reader that returns bytes must.
        try key.withUnsafeBytes { keyBytes in
            try database.withValue(.stateMachine, keyBytes) { $0.map { Array($0) } } != nil
        }
    }

    func settle() throws {
        try database.flush(.stateMachine)
        database.compact(.stateMachine)
        guard waitUntilQuiet(timeout: .seconds(120), { database.hasBackgroundWork }) else {
            throw ValidationError("raw store: compactions still running after 120 s")
        }
    }

    func close() { database.close() }
}

struct SealedStore: BenchTarget {
    let name = "sealed"
    let engine: StorageEngine

    func putBatch(_ items: [([UInt8], [UInt8])]) throws {
        var batch = WriteBatch()
        for (key, value) in items { batch.put(.stateMachine, key: key, value: value) }
        try engine.write(batch, durability: .buffered)
    }

    func putSynced(_ key: [UInt8], _ value: [UInt8]) throws {
        try engine.put(.stateMachine, key, value, durability: .synced)
    }

    func get(_ key: [UInt8]) throws -> Bool {
        try engine.get(.stateMachine, key) != nil
    }

    func settle() throws {
        try engine.flush()
        try engine.compact([.stateMachine])
        guard try engine.settle() else { throw ValidationError("sealed store: compactions still running after 120 s") }
    }
}
