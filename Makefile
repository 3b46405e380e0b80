# vm-dhcp. `make help` lists the targets.
SHELL := /usr/bin/env bash
CACHE ?= $(HOME)/.cache/vm-dhcp
BIN_DIR ?= bin
TOOLS = $(CACHE)/bin
CONTROLLER_GEN = $(TOOLS)/controller-gen
HELM = $(TOOLS)/helm
VERSION ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)
GO_BUILD = CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/vm-dhcp/vm-dhcp/internal/version.Version=$(VERSION)"

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## Install controller-gen and helm into $(CACHE)/bin.
	@hack/tools.sh >/dev/null

.PHONY: envtest
envtest: ## Build etcd + kube-apiserver into $(CACHE)/envtest and print the folder.
	@hack/envtest/setup.sh

.PHONY: generate
generate: ## Regenerate deepcopy, CRDs (into the chart), RBAC and the chart's webhook rules (from webhook.Configurations).
	@hack/tools.sh controller-gen >/dev/null
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(CONTROLLER_GEN) crd:crdVersions=v1 paths=./api/... output:crd:artifacts:config=charts/vm-dhcp-controller/crds
	@hack/generate-rbac.sh
	go run ./hack/webhookconfig charts/vm-dhcp-controller/generated/webhook/webhooks.yaml

.PHONY: verify
verify: generate ## Fail when generated files are stale.
	@git diff --exit-code -- api charts config || { echo "generated files are stale: run 'make generate' and commit"; exit 1; }

.PHONY: build
build: ## Build the controller, webhook and agent binaries into bin/.
	$(GO_BUILD) -o $(BIN_DIR)/vm-dhcp-controller ./cmd/vm-dhcp-controller
	$(GO_BUILD) -o $(BIN_DIR)/vm-dhcp-webhook ./cmd/vm-dhcp-webhook
	$(GO_BUILD) -o $(BIN_DIR)/vm-dhcp-agent ./coredhcp-build

.PHONY: test
test: ## Install what is missing, then run every test (unit, envtest, DHCP e2e, chart, fuzz).
	@hack/test.sh

.PHONY: bench
bench: ## Go benchmarks (IPAM, allocation throughput, the agent's plugin chain).
	go test -run '^$$' -bench . -benchmem ./controller/... ./plugins/...

.PHONY: reliability-report
reliability-report: ## Run the fault scenarios (root, ~10 min) and refresh docs/reliability.md and test/reliability/results/.
	VM_DHCP_RELIABILITY_REPORT=1 KUBEBUILDER_ASSETS="$$(hack/envtest/setup.sh)" go test -count=1 -timeout 60m ./test/reliability/

.PHONY: bench-dhcp
bench-dhcp: ## perfdhcp against the agent, CoreDHCP's file plugin and Kea (root, ~12 min; writes docs/benchmarks.md).
	bench/dhcp/run.sh --rounds 3

.PHONY: demo
demo: ## A real cluster here (kubelets, containerd, the chart's images via helm) and a QEMU VM whose console shows its lease (root).
	@hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the demo (also from another terminal) and remove everything it started.
	@hack/demo.sh down

.PHONY: demo-local
demo-local: ## The quick demo: local control plane, controller and webhook as processes, a kubelet stand-in for the agent (seconds warm).
	@hack/demo-local.sh up

.PHONY: demo-local-down
demo-local-down: ## Stop demo-local and remove everything it started.
	@hack/demo-local.sh down

CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE_REGISTRY ?=
IMAGE_TAG ?= $(VERSION)

.PHONY: images-offline
images-offline: build ## Build the three images as docker-archive tarballs into bin/images from bin/ (no container engine, no pulls).
	@mkdir -p $(BIN_DIR)/images
	@cd hack/images && go build -o $(abspath $(BIN_DIR))/images-tool .
	@for c in controller webhook agent; do \
	  $(BIN_DIR)/images-tool -f build/$$c.Dockerfile -context . -build-arg BINARY=prebuilt \
	    -t "$(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/)vm-dhcp/vm-dhcp-$$c:$(IMAGE_TAG)" -o $(BIN_DIR)/images/vm-dhcp-$$c.tar || exit 1; \
	done

.PHONY: images
images: ## Build the controller, webhook and agent images (needs docker or podman).
	@if [ -z "$(CONTAINER_ENGINE)" ]; then \
	  echo "images: no container engine found: install docker or podman, or set CONTAINER_ENGINE=/path/to/engine" >&2; exit 1; fi
	@"$(CONTAINER_ENGINE)" info >/dev/null 2>&1 || { \
	  echo "images: $(CONTAINER_ENGINE) is installed but its daemon does not answer ('$(CONTAINER_ENGINE) info' fails): start it first" >&2; exit 1; }
	@for c in controller webhook agent; do \
	  img="$(if $(IMAGE_REGISTRY),$(IMAGE_REGISTRY)/)vm-dhcp/vm-dhcp-$$c:$(IMAGE_TAG)"; \
	  echo "images: building $$img"; \
	  "$(CONTAINER_ENGINE)" build -f build/$$c.Dockerfile --build-arg VERSION=$(VERSION) -t "$$img" . || exit 1; \
	done
