#!/usr/bin/env bash
# Installs the project's build tools from the Go module proxy into a cache
# outside the repo and prints the folder holding them. Reuses what is there.
#   hack/tools.sh            -> controller-gen and helm
#   hack/tools.sh NAME...    -> only those
set -euo pipefail

CACHE_ROOT="${VM_DHCP_CACHE:-$HOME/.cache/vm-dhcp}"
BIN="$CACHE_ROOT/bin"
CONTROLLER_TOOLS_VERSION=v0.23.0
HELM_VERSION=v3.22.0
mkdir -p "$BIN"

install() { # name version package
  local name=$1 version=$2 pkg=$3 stamp="$BIN/.$1.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return
  fi
  echo "tools: installing $name $version into $BIN" >&2
  GOBIN="$BIN" CGO_ENABLED=0 go install "$pkg@$version"
  echo "$version" > "$stamp"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(controller-gen helm)
for t in "${want[@]}"; do
  case "$t" in
    controller-gen) install controller-gen "$CONTROLLER_TOOLS_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen ;;
    helm) install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
    *) echo "tools: unknown tool $t" >&2; exit 2 ;;
  esac
done
echo "$BIN"
