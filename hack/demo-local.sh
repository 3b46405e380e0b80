#!/usr/bin/env bash
# `make demo-local` / `make demo-local-down`: the whole system on this machine, built from
# real parts, with local processes and a kubelet stand-in for agent pods
# (see docs/demo-local.md; `make demo` runs it on a real node).
#   hack/demo-local.sh up     build, start, apply the examples, show a VM's DHCP lease;
#                       keeps running until Ctrl-C
#   hack/demo-local.sh down   stop whatever a previous `up` left and remove it
# Needs root (network namespaces) and Go. State lives in .demo-local/ (gitignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK="${VM_DHCP_DEMO_DIR:-$PWD/.demo-local}"
step() { echo "==> $*"; }

case "${1:-}" in
up)
  if [ "$(id -u)" != 0 ]; then
    echo "demo: needs root (it creates network namespaces); try: sudo make demo-local" >&2
    exit 1
  fi
  step "system packages (udhcpc for the VM's DHCP client)"
  hack/deps.sh
  step "helm (renders the chart)"
  TOOLS="$(hack/tools.sh helm)"
  step "control plane binaries (etcd, kube-apiserver; built once, ~15 min cold)"
  KUBEBUILDER_ASSETS="$(hack/envtest/setup.sh)"
  export KUBEBUILDER_ASSETS
  step "building vm-dhcp-controller, vm-dhcp-webhook, vm-dhcp-agent into bin/"
  make --no-print-directory build
  CGO_ENABLED=0 go build -o bin/vm-dhcp-localcluster ./cmd/vm-dhcp-localcluster
  if [ -f "$WORK/state" ]; then
    step "a previous demo left state in $WORK: removing it"
    bin/vm-dhcp-localcluster down --workdir "$WORK"
  fi
  rm -rf "$WORK"
  mkdir -p "$WORK"
  # exec: Ctrl-C reaches the local cluster, which stops everything it started.
  exec bin/vm-dhcp-localcluster up --workdir "$WORK" --bin bin --helm "$TOOLS/helm" --examples examples
  ;;
down)
  if [ -x bin/vm-dhcp-localcluster ]; then
    bin/vm-dhcp-localcluster down --workdir "$WORK"
  else
    go run ./cmd/vm-dhcp-localcluster down --workdir "$WORK"
  fi
  step "demo removed"
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
