#!/usr/bin/env bash
# Regenerates the Swift code for the .proto files under proto/: proto/crm into
# Sources/CRMProto/Generated, proto/etcd (the slice of etcd's KV API that `crm-bench race` calls)
# into Sources/EtcdProto/Generated.
# The generated code is committed: builds and CI never run this. Needs protoc (Debian's
# protobuf-compiler) and builds the two protoc plugins from the package mirror in a scratch
# directory outside the repository (a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || { echo "generate-protos: protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
plugins=${CRM_PROTOC_PLUGINS:-/tmp/crm-protoc-plugins}
mkdir -p "$plugins"
cat > "$plugins/Package.swift" <<'MANIFEST'
// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
    ],
    targets: []
)
MANIFEST
(cd "$plugins" && swift build -c release --product protoc-gen-swift && swift build -c release --product protoc-gen-grpc-swift-2)
bin="$plugins/.build/release"

out=Sources/CRMProto/Generated
rm -rf "$out"
mkdir -p "$out"
protoc --proto_path=proto \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" --swift_out="$out" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" --grpc-swift-2_out="$out" \
    --grpc-swift-2_opt=Visibility=Public,Client=true,Server=true \
    proto/crm/v1/*.proto
echo "generate-protos: wrote $(find "$out" -name '*.swift' | wc -l) files under $out"

out=Sources/EtcdProto/Generated
rm -rf "$out"
mkdir -p "$out"
protoc --proto_path=proto \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" --swift_out="$out" --swift_opt=Visibility=Public \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" --grpc-swift-2_out="$out" \
    --grpc-swift-2_opt=Visibility=Public,Client=true,Server=false \
    proto/etcd/*.proto
echo "generate-protos: wrote $(find "$out" -name '*.swift' | wc -l) files under $out"
