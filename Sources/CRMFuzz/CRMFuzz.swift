import Foundation
import FuzzHarness

// crm-fuzz: the fuzzing harnesses (FuzzHarness), two ways.
//
// Built with `make fuzz` (swiftc -sanitize=fuzzer,address -D CRM_LIBFUZZER), it is a libFuzzer
// binary: the harness is named by $CRM_FUZZ_HARNESS and the structure-aware mutator runs for
// the harnesses that carry Raft messages. Built normally, it is a command-line tool that writes
// seed corpora, replays inputs, and runs a harness over seeded random inputs (what CI does).

#if CRM_LIBFUZZER

private let selected: Harness = {
    let name = ProcessInfo.processInfo.environment["CRM_FUZZ_HARNESS"] ?? ""
    guard let harness = Harness(rawValue: name) else {
        FileHandle.standardError.write(
            Data(
                "crm-fuzz: set CRM_FUZZ_HARNESS to one of \(Harness.allCases.map(\.rawValue).joined(separator: ", "))\n"
                    .utf8))
        exit(2)
    }
    return harness
}()

@_silgen_name("LLVMFuzzerMutate")
private func libFuzzerMutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int) -> Int

@_silgen_name("LLVMFuzzerRunDriver")
private func libFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM links an executable's entry point as `<module>_main`: it hands control to libFuzzer.
@_cdecl("CRMFuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    _ = selected
    var count = argc
    var arguments = argv
    return libFuzzerRunDriver(&count, &arguments) { fuzzOneInput($0, $1) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("LLVMFuzzerCustomMutator")
public func fuzzMutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    // Half the time the structure-aware mutation (when the input decodes), else libFuzzer's own.
    if seed & 1 == 0,
        let mutated = MessageMutator.mutate(
            Array(UnsafeBufferPointer(start: data, count: size)), harness: selected, seed: UInt64(seed)),
        mutated.count <= maxSize
    {
        mutated.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: mutated.count) }
        return mutated.count
    }
    return libFuzzerMutate(data, size, maxSize)
}

#else

@main
struct CRMFuzz {
    static let usage = """
        usage: crm-fuzz seeds HARNESS DIR           write HARNESS's seed corpus into DIR
               crm-fuzz replay HARNESS FILE...      run HARNESS on each file (a crash repro)
               crm-fuzz property HARNESS N [SEED]   N seeded random inputs (mutated seeds and random bytes)
        harnesses: \(Harness.allCases.map(\.rawValue).joined(separator: ", "))
        """

    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard arguments.count >= 2, let harness = Harness(rawValue: arguments[1]) else { fail(usage) }
        switch arguments[0] {
        case "seeds":
            guard arguments.count == 3 else { fail(usage) }
            try FileManager.default.createDirectory(atPath: arguments[2], withIntermediateDirectories: true)
            let seeds = SeedCorpus.seeds(for: harness)
            for (number, seed) in seeds.enumerated() {
                try Data(seed).write(to: URL(fileURLWithPath: arguments[2] + "/seed-\(number)"))
            }
            print("crm-fuzz: \(seeds.count) seeds for \(harness.rawValue) in \(arguments[2])")
        case "replay":
            for path in arguments.dropFirst(2) {
                guard let data = FileManager.default.contents(atPath: path) else {
                    fail("crm-fuzz: cannot read \(path)")
                }
                harness.run(Array(data))
                print("crm-fuzz: \(path): ok")
            }
        case "property":
            guard arguments.count >= 3, let count = Int(arguments[2]) else { fail(usage) }
            let seed = arguments.count > 3 ? UInt64(arguments[3]) ?? 1 : 1
            let started = Date()
            // $CRM_FUZZ_LAST names a file that holds the input being run (left behind by a crash).
            let last = ProcessInfo.processInfo.environment["CRM_FUZZ_LAST"]
            PropertyRun(harness: harness, seed: seed).run(count) { input in
                if let last { try? Data(input).write(to: URL(fileURLWithPath: last)) }
            }
            print(
                "crm-fuzz: \(count) inputs through \(harness.rawValue) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
            )
        default:
            fail(usage)
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(2)
    }
}

#endif
