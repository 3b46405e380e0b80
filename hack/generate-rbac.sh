#!/usr/bin/env bash
# Generates the RBAC roles from the kubebuilder markers of each binary's
# packages into the chart's generated folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CG="$(hack/tools.sh controller-gen)/controller-gen"
out=charts/vm-dhcp-controller/generated
mkdir -p "$out"
for c in controller webhook; do
  [ -d "$c" ] || continue
  ls "$c"/*.go "$c"/*/*.go >/dev/null 2>&1 || continue
  "$CG" rbac:roleName="vm-dhcp-$c" paths="./$c/..." output:rbac:artifacts:config="$out/$c"
done
