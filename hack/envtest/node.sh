#!/usr/bin/env bash
# Builds the Kubernetes components of the real node (kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy) into the same
# version-keyed cache as the envtest control plane, in ONE go build of the
# kube-apiserver module (same replace block, so the build cache is shared), and
# prints that folder. Builds etcd and kube-apiserver first (setup.sh). Reuses
# the cache when every binary is already there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
OUT="$("$HERE/setup.sh")"

log() { echo "node binaries: $*" >&2; }

# kubectl too: the real-node test, make demo and the README commands use it,
# matched to the cluster's version instead of whatever is on the PATH.
# Arguments name a subset to build (hack/test.sh builds kubectl first and the
# rest in the background); none: all of them.
components=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)
if [ $# -gt 0 ]; then
  components=("$@")
fi
# One build at a time: a second caller (the real-node test while hack/test.sh
# still builds in the background) waits here and then finds the binaries.
exec 9>"$OUT/.node.lock"
flock 9
missing=()
for c in "${components[@]}"; do
  [ -x "$OUT/$c" ] || missing+=("$c")
done

if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} $K8S_VERSION into $OUT (cold: ~8 min on 2 cores after kube-apiserver)"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  # Without these the components report v0.0.0 (the kubelet registers that
  # as its node version and kubectl cannot parse it).
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  tmp="$OUT/.node-build"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (cd "$HERE/kube-apiserver" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for c in "${missing[@]}"; do mv "$tmp/$c" "$OUT/$c"; done
  rm -rf "$tmp"
fi

echo "$OUT"
