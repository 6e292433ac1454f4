# hotplugd — `make help` lists the targets.

GO          ?= go
BIN         := bin/hotplugd
CONFIG      ?= configs/rules.yaml
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 30s
# The packages whose tests need root and a real kernel run one at a time:
# they share loop devices and the uevent stream.
TESTFLAGS   ?= -count=1 -p 1 -timeout 30m

.DEFAULT_GOAL := help
.PHONY: help build run test check lint race bench fuzz clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/hotplugd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hotplugd

run: build ## run the daemon in the foreground on the shipped default rules
	$(BIN) monitor

test: ## run every test (integration tests need root and a real kernel)
	$(GO) test $(TESTFLAGS) ./...

lint: ## gofmt gate, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

race: ## run every test with the race detector
	$(GO) test -race $(TESTFLAGS) ./...

check: lint race ## lint, then the race tests

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem -p 1 ./...

fuzz: ## run each fuzz target for FUZZTIME
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean: ## remove build output
	rm -rf bin dist
