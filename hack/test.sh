#!/usr/bin/env bash
# The project's one test command (`make test`, run by .ci/run): installs what
# is missing, then runs every test against real parts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo; echo "=== $*"; }

step "system packages (DHCP clients, perfdhcp, QEMU)"
hack/deps.sh

step "test VM: Debian kernel and busybox (hack/vm-artifacts.sh)"
VMDHCP_VM_ARTIFACTS="$(hack/vm-artifacts.sh)"
export VMDHCP_VM_ARTIFACTS
echo "VMDHCP_VM_ARTIFACTS=$VMDHCP_VM_ARTIFACTS"

step "tools (controller-gen, helm)"
TOOLS="$(hack/tools.sh)"
export PATH="$TOOLS:$PATH"

step "envtest control plane"
KUBEBUILDER_ASSETS="$(hack/envtest/setup.sh)"
export KUBEBUILDER_ASSETS
echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"

# Binaries that only later steps need are built in the background, niced,
# so that a cold run builds them in the CPU the tests leave idle (the DHCP
# and fault tests mostly wait on clients and timers: ~20 % busy on 2 cores)
# instead of before them. Each script takes a lock: whoever needs a binary
# runs the script again, waits for the background build and finds it (or,
# if that build failed, builds it itself). Warm, they return at once.
bgdir="$(mktemp -d)"
log="$bgdir/go-test.log"
bgpids=()
# Each background build is a session of its own, so that a failing run
# stops the go build under it too.
stop_background() {
  local rc=$?
  for p in "${bgpids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for f in "$bgdir"/*.log; do
      [ -s "$f" ] && { echo "--- background build log $f"; tail -50 "$f"; }
    done
  fi
  rm -rf "$bgdir"
}
trap stop_background EXIT
background() { # name, command...
  local name="$1"
  shift
  # A new session is also a new scheduler autogroup (with
  # kernel.sched_autogroup_enabled), which would get an equal share of the
  # CPU whatever its processes' nice: the session lowers its own.
  setsid bash -c '{ echo 19 >/proc/self/autogroup; } 2>/dev/null; exec nice -n 19 "$@"' background "$@" \
    >"$bgdir/$name.log" 2>&1 &
  bgpids+=("$!")
}

step "real node: kubectl now; kubelet, kube-controller-manager, kube-scheduler, kube-proxy in the background"
# test/e2e/node (TestRealNode) runs the chart on real kubelets; developers
# may skip it with VM_DHCP_SKIP_REAL_NODE=1, CI never does. It needs root
# (CI is), and skips without it. Its TestMain runs hack/envtest/node.sh,
# which waits for the background build.
# One background job, the node binaries first (needed first): two Kubernetes
# builds at once would split the idle CPU and double the memory.
if [ -z "${VM_DHCP_SKIP_REAL_NODE:-}" ] && [ "$(id -u)" = 0 ]; then
  hack/envtest/node.sh kubectl >/dev/null
  background builds bash -c 'hack/envtest/node.sh >/dev/null && hack/envtest/setup-v1.30.sh'
  # Its kubectl (same version as the cluster) comes first on the PATH.
  export PATH="$KUBEBUILDER_ASSETS:$PATH"
else
  background builds hack/envtest/setup-v1.30.sh
fi

step "generated files are up to date"
make --no-print-directory verify

step "go vet"
go vet ./...

step "compile every test binary (in parallel)"
# Only what is not "ok": a package that fails to build or whose TestMain
# fails shows why (its output used to go to /dev/null with the rest).
go test -count=1 -run '^$' ./... 2>&1 | { grep -v -E '^(ok|\?) ' || true; }

step "go test (unit, envtest integration, DHCP end-to-end)"
# -p 1: packages run one at a time; the envtest and network-namespace suites
# each start their own control plane and would starve each other on 2 cores.
go test -count=1 -timeout 45m -p 1 ./... 2>&1 | tee "$log"

step "CRDs, webhook and controller against kube-apiserver v1.30 (the oldest Kubernetes the chart supports)"
# The same envtest suites on the oldest release of Chart.yaml's kubeVersion:
# the CRDs' CEL rules, the webhook and the controller must work there too.
# The controller's multi-controller stress test stays on the newest only.
# Waits for the background build (its log is shown), or builds it now.
KUBEBUILDER_ASSETS_V130="$(hack/envtest/setup-v1.30.sh)"
cat "$bgdir/builds.log"
KUBEBUILDER_ASSETS="$KUBEBUILDER_ASSETS_V130" go test -count=1 -timeout 30m -p 1 \
  ./api/... ./webhook/... 2>&1 | tee -a "$log"
KUBEBUILDER_ASSETS="$KUBEBUILDER_ASSETS_V130" go test -count=1 -timeout 30m -p 1 \
  -skip '^TestConcurrentAllocationsWithTwoControllersAndRestarts$' ./controller 2>&1 | tee -a "$log"
export KUBEBUILDER_ASSETS_V130

if [ -x hack/test-extra.sh ]; then
  step "chart: helm lint --strict and chart tests (own module)"
  hack/test-extra.sh
fi

step "fuzz (short, fixed number of executions)"
# Budgets are execution counts, not durations: with a duration, Go 1.26's
# fuzz coordinator can report a spurious "context deadline exceeded" when a
# starved worker is mid-exec at the deadline (golang/go#75804, fixed in Go
# 1.27). A count has no deadline to race; on 2 cores each run takes ~20-30 s.
go test -run '^$' -fuzz '^FuzzHandlers$' -fuzztime "${FUZZ_EXECS_HANDLERS:-300000x}" ./plugins/ippoollease
go test -run '^$' -fuzz '^FuzzValidateIPPool$' -fuzztime "${FUZZ_EXECS_WEBHOOK:-30000x}" ./webhook

# One closing line that counts the Go test packages of the main module.
passed=$(grep -c '^ok ' "$log" || true)
failed=$(grep -c '^FAIL' "$log" || true)
echo
echo "packages: $passed passed, $failed failed"
