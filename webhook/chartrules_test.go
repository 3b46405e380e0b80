package webhook_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
)

// TestChartWebhookRulesAreGenerated: the chart's webhook rules are exactly
// what Configurations() says (the suites here install Configurations()), so
// the installed chart sends the same operations, DELETE of IPPools included.
func TestChartWebhookRulesAreGenerated(t *testing.T) {
	want, err := webhook.ChartWebhooks()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), webhook.ChartWebhooksFile))
	if err != nil {
		t.Fatalf("%v (run make generate)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run make generate\n--- in the chart:\n%s\n--- from Configurations():\n%s", webhook.ChartWebhooksFile, got, want)
	}
}
