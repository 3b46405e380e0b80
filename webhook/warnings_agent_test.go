package webhook

import (
	"strings"
	"testing"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// TestDNSWarningMatchesAgent: the admission warning for a dns entry
// must say what the agent does with it. The agent's pool view trims spaces
// (parseV4) and sends "1.1.1.1 " in option 6; the webhook parses without
// trimming and warns that the agent leaves it out.
func TestDNSWarningMatchesAgent(t *testing.T) {
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net", IPv4Config: v1alpha1.IPv4Config{
		CIDR: "192.168.100.0/24", ServerIP: "192.168.100.2",
		Pool: v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.20"},
		DNS:  []string{"1.1.1.1 "}}}}
	pool.Namespace, pool.Name = "default", "p"
	p, _ := poolwatch.FromIPPool(pool)
	sent := p != nil && len(p.DNS) == 1
	warned := strings.Contains(strings.Join(optionWarnings(pool.Spec.IPv4Config), "\n"), "leaves it out")
	if sent && warned {
		t.Errorf("the agent sends dns %q (pool view DNS %v) but the warning says it leaves it out", pool.Spec.IPv4Config.DNS[0], p.DNS)
	}
	if !sent && !warned {
		t.Errorf("the agent leaves dns %q out without a warning", pool.Spec.IPv4Config.DNS[0])
	}
}
