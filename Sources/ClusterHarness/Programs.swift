import Foundation
import Synchronization

/// Running the project's scripts and tools to the end.
public enum Programs {
    /// Runs `executable` and throws when it fails; its standard output is discarded.
    public static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw HarnessError(
                "\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
    }

    /// Runs any program to the end (`input` on its standard input): exit status, stdout, stderr.
    public static func capture(
        _ path: String, _ arguments: [String], input: Data? = nil
    ) throws -> (status: Int32, output: String, errors: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let input {
            let pipe = Pipe()
            process.standardInput = pipe
            let writer = pipe.fileHandleForWriting
            Thread {
                writer.write(input)
                try? writer.close()
            }.start()
        }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read both pipes while it runs, so that neither fills and blocks the program.
        let errorData = Mutex(Data())
        let errorReader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
        errorReader.start()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while errorReader.isExecuting || !errorReader.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        return (
            process.terminationStatus, String(decoding: out, as: UTF8.self),
            String(decoding: errorData.withLock { $0 }, as: UTF8.self)
        )
    }

    /// The directory holding the built `crm-node` next to `executable` (a test bundle or tool),
    /// looking up to four levels up; `fallback` when none is found.
    public static func binaries(near executable: String, fallback: URL) -> URL {
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("crm-node").path) {
                return directory
            }
            directory.deleteLastPathComponent()
        }
        return fallback
    }
}
