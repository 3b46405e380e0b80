#!/usr/bin/env bash
# Builds the envtest control plane of the OLDEST Kubernetes the chart
# supports (Chart.yaml kubeVersion; Harvester v1.4 runs 1.30): kube-apiserver
# v1.30.14 from its own module (hack/envtest/kube-apiserver-v1.30, so it never
# pins the newest build's module) into a version-keyed cache, next to the
# etcd that hack/envtest/setup.sh builds (etcd 3.6 serves 1.30 too). Prints
# the folder, for KUBEBUILDER_ASSETS. Reuses the cache when both are there.
set -euo pipefail

K8S_OLD_VERSION="v1.30.14"
CACHE_ROOT="${VM_DHCP_CACHE:-$HOME/.cache/vm-dhcp}"
OUT="$CACHE_ROOT/envtest/$K8S_OLD_VERSION"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "envtest-v1.30: $*" >&2; }

mkdir -p "$OUT"
# One build at a time (hack/test.sh starts this one in the background).
exec 8>"$OUT/.setup.lock"
flock 8

if [ ! -x "$OUT/etcd" ]; then
  newest="$(K8S_VERSION= "$HERE/setup.sh")"
  cp "$newest/etcd" "$OUT/etcd.tmp"
  mv "$OUT/etcd.tmp" "$OUT/etcd"
fi

if [ ! -x "$OUT/kube-apiserver" ]; then
  log "building kube-apiserver $K8S_OLD_VERSION into $OUT (cold: ~9 min on 2 cores)"
  minor="$(echo "$K8S_OLD_VERSION" | cut -d. -f2)"
  # Without these the server reports v0.0.0 and kubectl and Helm's
  # kubeVersion check cannot parse it.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_OLD_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$HERE/kube-apiserver-v1.30" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
fi

echo "$OUT"
