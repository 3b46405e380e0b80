#!/usr/bin/env bash
# Builds the envtest control plane (etcd + kube-apiserver) from the Go module
# proxy into a version-keyed cache outside the repo and prints that folder, for
# KUBEBUILDER_ASSETS. Reuses the cache when both binaries are already there.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
CACHE_ROOT="${VM_DHCP_CACHE:-$HOME/.cache/vm-dhcp}"
OUT="$CACHE_ROOT/envtest/$K8S_VERSION"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "envtest: $*" >&2; }

mkdir -p "$OUT"
# hack/test.sh builds some binaries in the background while tests that need
# others run: one build at a time per cache folder, a second caller waits
# and then finds the binaries there.
exec 8>"$OUT/.setup.lock"
flock 8

if [ ! -x "$OUT/etcd" ]; then
  log "building etcd into $OUT (cold: ~4 min on 2 cores)"
  (cd "$HERE/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
fi

if [ ! -x "$OUT/kube-apiserver" ]; then
  log "building kube-apiserver $K8S_VERSION into $OUT (cold: ~9 min on 2 cores)"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  # Without these the server reports v0.0.0 and kubectl cannot parse it.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$HERE/kube-apiserver" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
fi

echo "$OUT"
