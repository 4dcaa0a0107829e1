# gpuledger — see `make help`.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS_MOD := tools/go.mod
TOOL_BINS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl
export PATH := $(BIN):$(PATH)

DATA ?= $(CURDIR)/.gpuledger-dev
LISTEN ?= 127.0.0.1:7600
# Fuzz budgets are counts of executions, not durations: with a duration, Go
# before 1.27 can fail a target with "context deadline exceeded" at its end
# (a race in the fuzzing coordinator, go.dev/issue/75804). FuzzApply runs
# each input against a fresh store, so it gets fewer.
FUZZEXECS ?= 100000
FUZZAPPLYEXECS ?= 1000
BENCHTIME ?=

.PHONY: help build run cluster test test-simulate test-short fuzz bench lint generate checkgenerate tools clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}' | \
	  sed -e 's|$$(LISTEN)|$(LISTEN)|g' -e 's|$$(DATA)|$(DATA)|g' -e 's|$$(FUZZEXECS)|$(FUZZEXECS)|g' -e 's|$$(FUZZAPPLYEXECS)|$(FUZZAPPLYEXECS)|g'

tools: $(TOOL_BINS) ## build the pinned tools (buf, protoc plugins, grpcurl) into ./bin

$(BIN)/buf: $(TOOLS_MOD)
	$(GO) build -modfile=$(TOOLS_MOD) -o $(BIN)/ github.com/bufbuild/buf/cmd/buf
$(BIN)/protoc-gen-go: $(TOOLS_MOD)
	$(GO) build -modfile=$(TOOLS_MOD) -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go
$(BIN)/protoc-gen-go-grpc: $(TOOLS_MOD)
	$(GO) build -modfile=$(TOOLS_MOD) -o $(BIN)/ google.golang.org/grpc/cmd/protoc-gen-go-grpc
$(BIN)/grpcurl: $(TOOLS_MOD)
	$(GO) build -modfile=$(TOOLS_MOD) -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl

COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +modified)
LDFLAGS := -X github.com/gpuledger/gpuledger/internal/version.Commit=$(COMMIT)

build: ## build gpuledgerd and gpuledger into ./bin
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

run: build ## run a development node (embedded badger, dev consortium) on $(LISTEN)
	$(BIN)/gpuledgerd dev --data $(DATA) --listen $(LISTEN)

cluster: build ## run three nodes of a development consortium on 127.0.0.1:7601-7603 (Ctrl-C stops them)
	@BIN=bin scripts/cluster.sh .gpuledger-cluster || [ $$? -eq 130 ]

test: $(BIN)/grpcurl ## run every test with the race detector, then a short fuzz run
	GPULEDGER_GRPCURL=$(BIN)/grpcurl $(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

test-simulate: ## the detectors against the simulation's ground truth at full size (10,000 serials), without the race detector
	$(GO) test -count=1 -run '^TestSimulation$$' -v ./internal/simulate

test-short: ## quick tests (no race detector, slow tests skipped)
	$(GO) test -short -count=1 ./...

fuzz: ## run each fuzz target for $(FUZZEXECS) executions ($(FUZZAPPLYEXECS) for FuzzApply)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    n=$(FUZZEXECS); [ "$$f" = FuzzApply ] && n=$(FUZZAPPLYEXECS); \
	    echo "fuzz $$pkg $$f ($$n executions)"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${n}x $$pkg; \
	  done; \
	done

bench: ## run the benchmarks (see docs/performance.md)
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHTIME) ./...

lint: tools ## go vet, gofmt and buf lint
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: run gofmt -w on the files above"; exit 1)
	$(BIN)/buf lint

generate: tools ## regenerate Go code (and the reflection descriptors) from proto/
	$(BIN)/buf generate
	$(BIN)/buf build --as-file-descriptor-set -o node/descriptors.binpb

checkgenerate: generate ## fail when the committed generated code is stale
	@git diff --exit-code -- proto/ node/descriptors.binpb || (echo "generated code is stale: run make generate and commit"; exit 1)
	@test -z "$$(git status --porcelain -- proto/ node/descriptors.binpb | grep '^??')" || (git status --porcelain -- proto/ node/descriptors.binpb; echo "untracked generated files: commit them"; exit 1)

clean: ## remove ./bin and the dev data directory
	rm -rf $(BIN) $(DATA)
