package webhook

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// bigOptions sets 32 routes and 32 search domains (both within the CRD's
// maxItems), which made a 1,927-byte reply before issue 12.
func bigOptions(c *v1alpha1.IPv4Config) {
	c.Routes, c.DomainSearch = nil, nil
	for i := range 32 {
		c.Routes = append(c.Routes, v1alpha1.Route{Destination: fmt.Sprintf("10.%d.0.0/16", 100+i), Gateway: "192.168.100.1"})
		c.DomainSearch = append(c.DomainSearch, fmt.Sprintf("search-domain-number-%02d.example.com", i))
	}
}

// Issue 12 items 13 and 14: what the agent cannot put on the wire is
// refused, with a message that says what and why.
func TestWireLimits(t *testing.T) {
	label64 := strings.Repeat("a", 64)
	tests := []struct {
		name  string
		edit  func(c *v1alpha1.IPv4Config)
		field string
		msg   string // "": accepted
	}{
		{name: "Harvester's example passes", edit: func(*v1alpha1.IPv4Config) {}},
		{name: "a 63-character label passes", edit: func(c *v1alpha1.IPv4Config) { c.DomainSearch = []string{strings.Repeat("a", 63) + ".example"} }},
		{name: "fully qualified name with trailing dot passes", edit: func(c *v1alpha1.IPv4Config) { c.DomainSearch = []string{"example.com."} }},
		{name: "search domain with a 64-character label", edit: func(c *v1alpha1.IPv4Config) { c.DomainSearch = []string{"ok.example", label64 + ".example"} },
			field: "spec.ipv4Config.domainSearch[1]", msg: "has a label of 64 characters"},
		{name: "search domain of one 200-character label", edit: func(c *v1alpha1.IPv4Config) { c.DomainSearch = []string{strings.Repeat("b", 200)} },
			field: "spec.ipv4Config.domainSearch[0]", msg: "has a label of 200 characters"},
		{name: "domain name with a 64-character label", edit: func(c *v1alpha1.IPv4Config) { c.DomainName = ptr.To(label64 + ".example") },
			field: "spec.ipv4Config.domainName", msg: "a DNS label has at most 63"},
		{name: "ntp host with a 64-character label", edit: func(c *v1alpha1.IPv4Config) { c.NTP = []string{label64 + ".example"} },
			field: "spec.ipv4Config.ntp[0]", msg: "a DNS label has at most 63"},
		{name: "32 routes and 32 search domains do not fit one reply", edit: bigOptions,
			field: "spec.ipv4Config", msg: "at most 1000 fit in one reply"},
		{name: "32 routes alone fit", edit: func(c *v1alpha1.IPv4Config) { bigOptions(c); c.DomainSearch = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := harvesterPool()
			tc.edit(&p.Spec.IPv4Config)
			es := ValidateIPPoolSpec(p, Options{})
			if tc.msg == "" {
				if len(es) > 0 {
					t.Fatalf("refused: %v", es)
				}
				return
			}
			if len(es) != 1 || es[0].Field != tc.field || !strings.Contains(es[0].Error(), tc.msg) {
				t.Fatalf("got %v, want one error on %s saying %q", es, tc.field, tc.msg)
			}
			t.Logf("refused: %v", es)
		})
	}
}
