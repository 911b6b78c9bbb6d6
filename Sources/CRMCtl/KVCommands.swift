import ArgumentParser
import CRMClient
import CRMProto
import Foundation

struct KV: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv", abstract: "Read and write keys through any member.",
        subcommands: [Get.self, Put.self, Delete.self, CAS.self, Range.self])

    struct Get: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument var key: String
        @Flag(help: "Read this member's own state instead of a linearizable read.") var serializable = false
        func run() async throws {
            let cluster = try Cluster(options, api: .client)
            defer { cluster.close() }
            var request = Crm_V1_GetRequest()
            request.key = Data(key.utf8)
            request.consistency = serializable ? .serializable : .linearizable
            let sent = request
            let response = try await cluster.onAnyMember { try await $0.kv.get(sent) }
            if options.json {
                try Output.json(
                    KVJSON(
                        key: key, found: response.found,
                        value: response.found ? String(decoding: response.value, as: UTF8.self) : nil))
            } else if response.found {
                print(String(decoding: response.value, as: UTF8.self))
            } else {
                FileHandle.standardError.write(Data("crmctl: \(key) not found\n".utf8))
            }
            if !response.found { throw ExitCode(3) }
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a value.",
            discussion:
                "A value given as an argument is visible to other users in `ps`; for anything sensitive, give `-` and pipe the value on standard input."
        )
        @OptionGroup var options: ConnectionOptions
        @Argument var key: String
        @Argument(help: "The value, or - to read it from standard input (keeps it out of the process list).") var value:
            String
        func run() async throws {
            let bytes: Data
            if value == "-" {
                bytes = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                bytes = Data(value.utf8)
            }
            let cluster = try Cluster(options, api: .client)
            defer { cluster.close() }
            var request = Crm_V1_PutRequest()
            request.key = Data(key.utf8)
            request.value = bytes
            let sent = request
            let response = try await cluster.onAnyMember { try await $0.kv.put(sent) }
            if options.json { try Output.json(["applied_index": response.header.appliedIndex]) } else { print("ok") }
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument var key: String
        func run() async throws {
            let cluster = try Cluster(options, api: .client)
            defer { cluster.close() }
            var request = Crm_V1_DeleteRequest()
            request.key = Data(key.utf8)
            let sent = request
            let response = try await cluster.onAnyMember { try await $0.kv.delete(sent) }
            if options.json {
                try Output.json(["existed": response.existed])
            } else {
                print(response.existed ? "deleted" : "was absent")
            }
        }
    }

    struct CAS: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cas", abstract: "Set VALUE if the key holds EXPECTED (--expect-absent: if it does not exist)."
        )
        @OptionGroup var options: ConnectionOptions
        @Argument var key: String
        @Argument(help: "The value required now (omit with --expect-absent).") var expected: String?
        @Argument var value: String?
        @Flag(help: "Swap only if the key does not exist.") var expectAbsent = false
        func validate() throws {
            if expectAbsent && value != nil { throw ValidationError("with --expect-absent give KEY VALUE only") }
            if !expectAbsent && value == nil {
                throw ValidationError("give KEY EXPECTED VALUE, or --expect-absent KEY VALUE")
            }
        }
        func run() async throws {
            let cluster = try Cluster(options, api: .client)
            defer { cluster.close() }
            var request = Crm_V1_CompareAndSwapRequest()
            request.key = Data(key.utf8)
            request.expectAbsent = expectAbsent
            if expectAbsent {
                request.newValue = Data((expected ?? "").utf8)
            } else {
                request.expectedValue = Data(expected!.utf8)
                request.newValue = Data(value!.utf8)
            }
            let sent = request
            let response = try await cluster.onAnyMember { try await $0.kv.compareAndSwap(sent) }
            if options.json {
                try Output.json(["swapped": response.swapped])
            } else {
                print(response.swapped ? "swapped" : "not swapped: the value differs")
            }
            if !response.swapped { throw ExitCode(3) }
        }
    }

    struct Range: AsyncParsableCommand {
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "First key (inclusive).") var from: String
        @Argument(help: "Last key (exclusive); empty for the end.") var to: String = ""
        @Option(help: "At most this many keys (1–10000).") var limit: UInt32 = 100
        func run() async throws {
            let cluster = try Cluster(options, api: .client)
            defer { cluster.close() }
            var request = Crm_V1_RangeRequest()
            request.from = Data(from.utf8)
            request.to = Data(to.utf8)
            request.limit = limit
            let sent = request
            let response = try await cluster.onAnyMember { try await $0.kv.range(sent) }
            let pairs = response.pairs.map {
                KVJSON(
                    key: String(decoding: $0.key, as: UTF8.self), found: true,
                    value: String(decoding: $0.value, as: UTF8.self))
            }
            if options.json {
                try Output.json(RangeJSON(pairs: pairs, more: response.more))
            } else {
                for pair in pairs { print("\(pair.key)\t\(pair.value ?? "")") }
                if response.more { print("(more keys follow; continue from the last key)") }
            }
        }
    }
}

struct KVJSON: Encodable {
    var key: String
    var found: Bool
    var value: String?
}

struct RangeJSON: Encodable {
    var pairs: [KVJSON]
    var more: Bool
}

struct VerifyJSON: Encodable {
    var values_checked: UInt64
    var damaged: [String]
}
