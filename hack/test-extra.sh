#!/usr/bin/env bash
# Checks that need more than `go test ./...` of the main module, run by
# hack/test.sh after it: `helm lint --strict` of the chart (Helm from
# hack/tools.sh, cached under $HOME/.cache/vm-dhcp) and the chart's Go tests,
# which live in their own module (test/chart) to keep the Helm SDK out of the
# module the binaries are built from.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM="$(hack/tools.sh helm)/helm"
chart=charts/vm-dhcp-controller

echo "--- helm lint --strict (default values)"
"$HELM" lint --strict "$chart"
echo "--- helm lint --strict (cert-manager, ServiceMonitor, more replicas)"
"$HELM" lint --strict "$chart" \
  --set webhook.certManager.enabled=true \
  --set metrics.serviceMonitor.enabled=true \
  --set controller.replicas=2 --set webhook.replicas=3

if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  KUBEBUILDER_ASSETS="$(hack/envtest/setup.sh)"
  export KUBEBUILDER_ASSETS
fi
echo "--- chart tests (test/chart: render, invariants, schema, README, install into envtest)"
(cd test/chart && go test -count=1 -timeout 20m ./...)

# The oldest Kubernetes of Chart.yaml's kubeVersion: Helm checks kubeVersion
# against the server, and the apiserver checks every object of the chart.
if [ -z "${KUBEBUILDER_ASSETS_V130:-}" ]; then
  KUBEBUILDER_ASSETS_V130="$(hack/envtest/setup-v1.30.sh)"
fi
echo "--- chart install into kube-apiserver v1.30 ($KUBEBUILDER_ASSETS_V130)"
(cd test/chart && KUBEBUILDER_ASSETS="$KUBEBUILDER_ASSETS_V130" go test -count=1 -timeout 20m -run '^TestInstall' ./...)
