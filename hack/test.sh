#!/usr/bin/env bash
# The project's one test command (`make test`, run by .ci/run): installs what
# is missing, then runs every test against real parts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo; echo "=== $*"; }

step "system packages (DHCP clients, perfdhcp)"
hack/deps.sh

step "tools (controller-gen, helm)"
TOOLS="$(hack/tools.sh)"
export PATH="$TOOLS:$PATH"

step "envtest control plane"
KUBEBUILDER_ASSETS="$(hack/envtest/setup.sh)"
export KUBEBUILDER_ASSETS
echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"

step "generated files are up to date"
make --no-print-directory verify

step "go vet"
go vet ./...

step "go test (unit, envtest integration, DHCP end-to-end)"
go test -count=1 -timeout 40m -p 1 ./... 2>&1 | tee /tmp/vm-dhcp-test.log

if [ -x hack/test-extra.sh ]; then
  step "chart lint and fuzz"
  hack/test-extra.sh
fi
