# Entry points for operators and CI. See README.md.
SWIFT ?= swift

# Seeds for `make soak` (override: make soak SEEDS=20000 START=500000).
SEEDS ?= 100000
START ?= 0

.PHONY: setup build release test check-ops lint format up down sim soak chaos planted fuzz bench-storage race clean

setup:
	./cluster/install-deps.sh

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

# Tests with wall-clock deadlines run on their own after the CPU-bound ones (the simulator's
# sweeps hold both cores, and a sleeping test may then wake many seconds late): first the socket
# tests (peer transport, the drill's proxies), then the real-process cluster tests (a new leader
# within 2 s), then the short chaos suite (every fault kind once) on the same debug binaries.
# A Python with grpcio for the tests that call the cluster as another language's client does.
PYENV := .build/pyenv
$(PYENV)/bin/python3:
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install --quiet --disable-pip-version-check grpcio grpcio-tools

test: setup $(PYENV)/bin/python3 lint check-ops
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip ClusterTests --skip TransportTests --skip ChaosTests
	$(SWIFT) test --skip-build --filter "TransportTests|ChaosTests"
	$(SWIFT) test --skip-build --filter ClusterTests
	.build/debug/crm-chaos suite chaos/short-suite.yaml --runs 1 --report .build/chaos-short

# Style: swift-format with .swift-format (120 columns, as SwiftNIO); generated code is left out.
# `make format` rewrites the files in place; `make lint` (part of `make test`) fails on any difference.
SWIFT_SOURCES = $$(find Sources Tests -name '*.swift' -not -path '*/Generated/*')
lint:
	$(SWIFT) format lint --strict $(SWIFT_SOURCES)

format:
	$(SWIFT) format format -i $(SWIFT_SOURCES)

# The alert rules parse and their unit tests pass (promtool from Debian's prometheus package);
# the dashboard is valid JSON. Which metrics they name is checked against a live member by
# DashboardAndAlertTests.
check-ops:
	@promtool=$$(realpath $$(./cluster/get-promtool.sh)) && $$promtool check rules ops/prometheus/crm-alerts.yml \
		&& cd ops/prometheus && $$promtool test rules crm-alerts-test.yml
	python3 -c 'import json, sys; json.load(open("ops/grafana/crm-cluster.json")); print("ops/grafana/crm-cluster.json: valid JSON")'

# A local 3-member cluster on 127.0.0.1 (run/local/); `make down` stops exactly those processes.
up: release
	./cluster/local-cluster.sh up 3

down:
	./cluster/local-cluster.sh down

# The full chaos suite (chaos/suite.yaml), RUNS times each scenario; prints the table. Debug
# binaries: the disk, clock and planted-bug faults exist only there (the test-only fault hook).
RUNS ?= 5
chaos: setup
	$(SWIFT) build --product crm-node
	$(SWIFT) build --product crm-chaos
	.build/debug/crm-chaos suite chaos/suite.yaml --runs $(RUNS)

# The planted-bug drills RUNS times each: every run must fail (PASSED 0 in the table).
planted: setup
	$(SWIFT) build --product crm-node
	$(SWIFT) build --product crm-chaos
	.build/debug/crm-chaos suite chaos/planted/suite.yaml --runs $(RUNS) || true

# libFuzzer over every harness (crm-fuzz built with -sanitize=fuzzer,address in .build-fuzz):
# each runs FUZZ_RUNS executions or FUZZ_SECONDS, whichever ends first, from a seed corpus of
# real traffic and records; crashes land in .build-fuzz/crashes (copy them to
# Tests/FuzzTests/Regressions/<harness>/ once fixed). make fuzz FUZZ_HARNESSES=raft-step runs one. The
# Swift backtracer is off there: libFuzzer reports the trap and writes the input.
FUZZ_RUNS ?= 10000000
FUZZ_SECONDS ?= 3600
FUZZ_HARNESSES ?= raft-step frame-stream wire-round-trip snapshot-assembly kv-records storage-records sealed identity front-json
fuzz: setup
	$(SWIFT) build --product crm-fuzz
	$(SWIFT) build -c release --product crm-fuzz --scratch-path .build-fuzz \
		-Xswiftc -sanitize=fuzzer,address -Xswiftc -DCRM_LIBFUZZER -Xswiftc -parse-as-library
	mkdir -p .build-fuzz/crashes
	for harness in $(FUZZ_HARNESSES); do \
		mkdir -p .build-fuzz/corpus/$$harness && .build/debug/crm-fuzz seeds $$harness .build-fuzz/corpus/$$harness && \
		SWIFT_BACKTRACE=enable=no CRM_FUZZ_HARNESS=$$harness .build-fuzz/release/crm-fuzz .build-fuzz/corpus/$$harness -dict=Tests/FuzzTests/raft.dict \
			-runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=5 \
			-artifact_prefix=.build-fuzz/crashes/$$harness- -print_final_stats=1 2> .build-fuzz/$$harness.log; \
		echo "$$harness: exit $$?; $$(grep -E '^(Done|stat::number_of_executed_units)' .build-fuzz/$$harness.log | tr '\n' ' ')"; \
	done

# The simulator in a release build: the CI-sized sweep, and the long soak.
sim: setup
	$(SWIFT) build -c release --product crm-sim
	.build/release/crm-sim --nodes 3,5 --seeds 500

soak: setup
	$(SWIFT) build -c release --product crm-sim
	.build/release/crm-sim --nodes 3,5 --seeds $(SEEDS) --start $(START) --progress-every 10000

bench-storage: setup
	$(SWIFT) run -c release crm-bench storage

# The race against etcd on this machine (about 10 minutes; release binaries, Debian's etcd-server).
# Options after RACE=, e.g. make race RACE="--clients 16 --ops put --json".
RACE ?=
race: release
	./cluster/install-deps.sh etcd-server
	.build/release/crm-bench race $(RACE)

# A new member catches up by snapshot from a store larger than any in-memory bound (4 GiB of
# incompressible 1 MiB values; about 12 GiB of disk per run): time and RSS. CATCHUP="--gib 1" for
# a shorter run; the membership cluster tests run the same path in CI on a small store.
CATCHUP ?=
catchup: release
	.build/release/crm-bench catchup $(CATCHUP)

clean:
	rm -rf .build
