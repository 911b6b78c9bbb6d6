# Entry points for operators and CI. See README.md.
SWIFT ?= swift

.PHONY: setup build release test bench-storage clean

setup:
	./cluster/install-deps.sh

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

test: setup
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

bench-storage: setup
	$(SWIFT) run -c release crm-bench storage

clean:
	rm -rf .build
