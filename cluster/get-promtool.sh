#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus's rule checker), fetching it if needed: one on PATH,
# else .build/tools/promtool, else extracted from Debian's prometheus package (downloaded, not
# installed: no daemon is set up). Used by `make check-ops` (and so by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
tool=.build/tools/promtool
if [ -x "$tool" ]; then echo "$tool"; exit 0; fi

run_as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then run_as_root=(sudo -n); fi
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! (cd "$scratch" && apt-get download prometheus >/dev/null 2>&1); then
    echo "get-promtool: refreshing the package lists" >&2
    "${run_as_root[@]}" apt-get update -qq >&2
    (cd "$scratch" && apt-get download prometheus >/dev/null)
fi
dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/root"
mkdir -p .build/tools
cp "$scratch/root/usr/bin/promtool" "$tool"
echo "get-promtool: extracted $("$tool" --version 2>&1 | head -1)" >&2
echo "$tool"
