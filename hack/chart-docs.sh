#!/usr/bin/env bash
# Regenerates the values table of charts/vm-dhcp-controller/README.md from
# values.schema.json and values.yaml (the chart test checks it is current).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../test/chart"
go test -count=1 -run '^TestReadmeValuesTable$' . -args -update
