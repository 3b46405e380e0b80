// Package chart holds the tests of the Helm chart in charts/vm-dhcp-controller.
// It is its own Go module so that the Helm SDK and its dependencies stay out of
// the module the controller, webhook and agent are built from; hack/test-extra.sh
// runs it with `cd test/chart && go test ./...`.
package chart
