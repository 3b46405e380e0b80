// Command webhookconfig writes webhook.ChartWebhooks() — the names, paths,
// rules and policies of webhook.Configurations() — to the chart's
// generated/webhook/webhooks.yaml, which templates/webhookconfigurations.yaml
// renders. The Go function stays the one source of the rules: the envtest
// suites install it directly, the chart through this file, and `make verify`
// (and a webhook test) fail when the file is stale.
//
// Usage: go run ./hack/webhookconfig <output file>
package main

import (
	"fmt"
	"os"

	"github.com/vm-dhcp/vm-dhcp/webhook"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: webhookconfig <output file>")
		os.Exit(2)
	}
	b, err := webhook.ChartWebhooks()
	if err == nil {
		err = os.WriteFile(os.Args[1], b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhookconfig:", err)
		os.Exit(1)
	}
}
