#!/usr/bin/env bash
# `make demo` / `make demo-down`: the whole system on a real Kubernetes
# cluster on this machine, built from real parts (see docs/demo.md).
#   hack/demo.sh up     build, start the cluster (control plane + two real
#                       kubelets with containerd), helm install the chart from
#                       images built from build/, apply the examples, boot a
#                       real VM and show its console; keeps running until
#                       Ctrl-C or `make demo-down`
#   hack/demo.sh down   stop a running `up` (from another terminal) or remove
#                       whatever one that died left behind
# Needs root (network namespace, containerd, kubelet) and Go. State lives in
# .demo/ (gitignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK="${VM_DHCP_DEMO_DIR:-$PWD/.demo}"
step() { echo "==> $*"; }

case "${1:-}" in
up)
  if [ "$(id -u)" != 0 ]; then
    echo "demo: needs root (network namespace, containerd, kubelet); try: sudo make demo" >&2
    exit 1
  fi
  step "system packages (containerd, runc, CNI plugins, QEMU, ...)"
  hack/deps.sh
  step "the VM's kernel, busybox and dhclient (hack/vm-artifacts.sh)"
  VMDHCP_VM_ARTIFACTS="$(hack/vm-artifacts.sh)"
  export VMDHCP_VM_ARTIFACTS
  step "helm"
  hack/tools.sh helm >/dev/null
  step "Kubernetes binaries (etcd, kube-apiserver, kubelet, ...; built once into the cache: measured 9.5 min cold on 2 cores)"
  hack/envtest/setup.sh >/dev/null
  # kubectl of the cluster's version, first on the PATH.
  PATH="$(hack/envtest/node.sh):$PATH"
  export PATH
  step "building vm-dhcp-controller, vm-dhcp-webhook, vm-dhcp-agent into bin/"
  make --no-print-directory build
  CGO_ENABLED=0 go build -o bin/vm-dhcp-node ./cmd/vm-dhcp-node
  if [ -d "$WORK" ]; then
    step "a previous demo left state in $WORK: removing it"
    bin/vm-dhcp-node down --workdir "$WORK"
  fi
  rm -rf "$WORK"
  mkdir -p "$WORK"
  # exec: Ctrl-C reaches vm-dhcp-node, which stops everything it started.
  exec bin/vm-dhcp-node up --workdir "$WORK" --bin bin
  ;;
down)
  if [ -x bin/vm-dhcp-node ]; then
    bin/vm-dhcp-node down --workdir "$WORK"
  else
    go run ./cmd/vm-dhcp-node down --workdir "$WORK"
  fi
  rm -rf "$WORK"
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
