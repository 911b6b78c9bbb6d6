// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "crm-cluster",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "crm-bench", targets: ["CRMBench"]),
        .library(name: "Storage", targets: ["Storage"]),
        .library(name: "Sealing", targets: ["Sealing"]),
        .library(name: "Raft", targets: ["Raft"]),
        .library(name: "RaftStorage", targets: ["RaftStorage"]),
        .executable(name: "crm-sim", targets: ["CRMSim"]),
        .executable(name: "crm-node", targets: ["CRMNode"]),
        .executable(name: "crmctl", targets: ["CRMCtl"]),
        .executable(name: "crm-chaos", targets: ["CRMChaos"]),
        .executable(name: "crm-fuzz", targets: ["CRMFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // Thin system-library targets: one C header each, linked from Debian's -dev packages.
        .systemLibrary(name: "CRocksDB", pkgConfig: "rocksdb", providers: [.apt(["librocksdb-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CArgon2", pkgConfig: "libargon2", providers: [.apt(["libargon2-dev"])]),

        // Linux process controls Swift cannot call directly (prctl, gettid): core dumps, priorities.
        .target(name: "CProcessControl"),
        // CRC-32C with the CPU's instruction (SSE 4.2) or a table.
        .target(name: "CChecksum"),

        // Big-endian binary records: the one reader and writer every codec uses.
        .target(name: "BinaryCoding"),

        // Cryptography and compression: keys, AES-256-GCM, HMAC, LZ4 and the sealed-value envelope.
        .target(name: "Sealing", dependencies: ["CLibCrypto", "CLZ4"]),

        // The audit trail's hash chain: entries linked by SHA-256, and their checker (shared by
        // the state machine that extends the chain and the tools that verify it).
        .target(name: "AuditChain", dependencies: ["BinaryCoding", "Sealing"]),

        // The encrypted, compressed key-value engine over RocksDB.
        .target(
            name: "Storage",
            dependencies: [
                "CRocksDB", "Sealing",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The consensus core: pure Raft, standard library only (no I/O, clock or randomness).
        .target(name: "Raft"),

        // The Raft log, hard state and snapshots on the sealed storage engine.
        .target(
            name: "RaftStorage",
            dependencies: ["Raft", "Storage", "BinaryCoding", .product(name: "Logging", package: "swift-log")]
        ),

        // The replicated key-value state machine on the storage engine, with client sessions.
        .target(
            name: "KVStore",
            dependencies: [
                "Raft", "Storage", "Sealing", "BinaryCoding", "AuditChain",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),

        // The CRM's data layer on the replicated state: cluster-wide CRM keys, per-subject keys,
        // sealed personal fields, lookup tokens.
        .target(name: "CRM", dependencies: ["KVStore", "Sealing", "BinaryCoding", "AuditChain"]),

        // Logical backups: encrypted, compressed chunk archives of one view of the applied
        // state, a signed and MACed manifest, quick and deep verification.
        .target(name: "Backup", dependencies: ["CRM", "KVStore", "Raft", "Sealing", "BinaryCoding", "AuditChain"]),

        // Who may use the CRM: passwords (Argon2id through libargon2, imported PBKDF2 and
        // scrypt through libcrypto), the password policy, bounded hashing; roles, deny by
        // default, and the separation of duties.
        .target(
            name: "Identity",
            dependencies: [
                "CRM", "KVStore", "BinaryCoding", "CArgon2", "CLibCrypto", "Sealing",
                .product(name: "Yams", package: "Yams"),
            ]),

        // The member loop: drives the consensus core, the durable log (a seam) and the state
        // machine, and answers its callers; deterministic, so the simulator runs it as it ships.
        .target(
            name: "Engine",
            dependencies: ["Raft", "KVStore", .product(name: "Logging", package: "swift-log")]
        ),

        // The client and admin APIs: code generated from proto/ by cluster/generate-protos.sh
        // (committed; builds never run protoc).
        .target(
            name: "CRMProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // The peer wire format: frames, and Raft messages in them (no I/O: the transport uses it).
        .target(name: "Wire", dependencies: ["Raft", "BinaryCoding", "CChecksum"]),

        // Mutual-TLS peer connections carrying Wire frames (SwiftNIO, swift-nio-ssl).
        .target(
            name: "Transport",
            dependencies: [
                "Raft", "Wire", "BinaryCoding", "Sealing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The fault file a debug member reads (CRM_FAULT_FILE): one type for the node and the drills.
        .target(name: "FaultFile"),

        // The node: configuration, the Raft loop, the client and admin services, health.
        .target(
            name: "Node",
            dependencies: [
                "Raft", "RaftStorage", "KVStore", "CRM", "Engine", "Storage", "Sealing", "Transport", "Wire", "CRMProto", "CRMClient", "CProcessControl",
                "FaultFile", "Identity", "Backup",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            // Disk fault hooks for the tests exist in debug builds only (see FaultHooks.swift).
            swiftSettings: [.define("CRM_FAULT_HOOKS", .when(configuration: .debug))]
        ),

        // A gRPC client of a member's APIs, over mutual TLS (crmctl, crm-bench, tests).
        .target(
            name: "CRMClient",
            dependencies: [
                "CRMProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),

        // crm-node: one member.
        .executableTarget(
            name: "CRMNode",
            dependencies: [
                "Node",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // crmctl: the admin CLI.
        .executableTarget(
            name: "CRMCtl",
            dependencies: [
                "CRMClient", "CRMProto", "AuditChain", "Backup",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ]
        ),

        // The deterministic cluster simulator (used by crm-sim and the tests).
        .target(
            name: "Simulation",
            dependencies: [
                "Raft", "Engine", "KVStore", "Storage", "BinaryCoding", "AuditChain",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),

        // crm-sim: runs seeds of the simulator, replays one with a trace, plants known bugs.
        .executableTarget(
            name: "CRMSim",
            dependencies: [
                "Simulation", "Raft",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // The one harness for clusters of real crm-node processes: certificates, member configs
        // (encoded from NodeConfig), processes, fault files; used by crm-chaos and the tests.
        .target(
            name: "ClusterHarness",
            dependencies: [
                "Node", "CRM", "CRMClient", "CRMProto", "FaultFile", "Raft",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ]
        ),

        // crm-chaos: chaos drills against real crm-node processes, judged by the checker.
        .executableTarget(
            name: "CRMChaos",
            dependencies: [
                "CRMClient", "CRMProto", "Simulation", "FaultFile", "ClusterHarness", "Node", "Identity", "AuditChain",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),

        // The fuzzing harnesses: decoders and the consensus core against any bytes.
        .target(
            name: "FuzzHarness",
            dependencies: ["Raft", "Wire", "Transport", "KVStore", "RaftStorage", "Storage", "Sealing", "Simulation", "Node", "CRMClient"]
        ),

        // crm-fuzz: libFuzzer binary (make fuzz) or seeds/replay/property tool.
        .executableTarget(name: "CRMFuzz", dependencies: ["FuzzHarness"]),

        // The slice of etcd's v3 API that `crm-bench race` calls (generated from proto/etcd, committed).
        .target(
            name: "EtcdProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // crm-bench: closed-loop benchmarks.
        .executableTarget(
            name: "CRMBench",
            dependencies: [
                "Storage", "Sealing", "CRocksDB", "CRMClient", "CRMProto", "Transport", "Wire", "Raft", "EtcdProto",
                "ClusterHarness", "Node", "Identity",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "SealingTests", dependencies: ["Sealing"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "Sealing", "CRocksDB"]),
        .testTarget(name: "RaftTests", dependencies: ["Raft"]),
        .testTarget(name: "SimulationTests", dependencies: ["Simulation", "Raft"]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "Raft", "BinaryCoding"]),
        // Helpers for the tests that use real sockets and processes.
        .target(
            name: "CRMTestSupport",
            dependencies: [
                "ClusterHarness",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tests/Support"
        ),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "Raft", "Wire", "Sealing", "CRMTestSupport", .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(
            name: "ClusterTests",
            dependencies: ["CRMClient", "CRMProto", "Wire", "CRMTestSupport", "ClusterHarness", "Node", "FaultFile", "Identity", "Backup", .product(name: "GRPCCore", package: "grpc-swift-2"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]
        ),
        .testTarget(
            name: "NodeTests",
            dependencies: [
                "Node", "Engine", "Raft", "KVStore", "RaftStorage", "Storage", "Sealing", "Transport", "Wire",
                "CRMTestSupport", "ClusterHarness", "CRMClient", "CRMProto", .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
            ]),
        .testTarget(name: "ChaosTests", dependencies: ["CRMChaos", "CRMTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                                                       .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(name: "KVStoreTests", dependencies: ["KVStore", "Raft", "Storage", "Sealing", "BinaryCoding"]),
        // A CRM state machine on in-memory storage, for the CRM and identity tests.
        .target(name: "CRMStateSupport", dependencies: ["KVStore", "Raft", "Sealing", "Storage"], path: "Tests/StateSupport"),
        .testTarget(
            name: "CRMTests",
            dependencies: ["CRM", "CRMStateSupport", "KVStore", "Raft", "Storage", "Sealing", "BinaryCoding", "Backup"]),
        .testTarget(name: "IdentityTests", dependencies: ["Identity", "CRMStateSupport", "CRM", "KVStore", "Sealing"]),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzHarness"], exclude: ["Regressions"]),
        .testTarget(name: "RaftStorageTests", dependencies: ["RaftStorage", "Raft", "Storage", "Sealing"]),
    ]
)
