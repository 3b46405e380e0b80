package webhook

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
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

// Issue 12 items 13 and 14, issue 14: options that cannot fit one reply
// are refused with a message that says what to shorten; entries the agent
// cannot send are admitted (as Harvester admits them) and left out.
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
		// What the agent cannot send is admitted (Harvester admits it) and
		// left out: optionWarnings says so, TestOptionWarnings checks it.
		{name: "search domain with a 64-character label is admitted", edit: func(c *v1alpha1.IPv4Config) { c.DomainSearch = []string{"ok.example", label64 + ".example"} }},
		{name: "domain name with a 64-character label is admitted", edit: func(c *v1alpha1.IPv4Config) { c.DomainName = ptr.To(label64 + ".example") }},
		{name: "ntp host with a 64-character label is admitted", edit: func(c *v1alpha1.IPv4Config) { c.NTP = []string{label64 + ".example"} }},
		{name: "a Harvester-style maximum fits: 3 DNS, 4 NTP, 40 search domains", edit: func(c *v1alpha1.IPv4Config) {
			*c = maxOptionsPool(t).Spec.IPv4Config
		}},
		{name: "a long search domain is sized compressed, as the agent sends it", edit: func(c *v1alpha1.IPv4Config) {
			// 40 x 60 characters: 2,480 bytes written out, 600 compressed.
			c.DomainSearch = nil
			for i := range 40 {
				c.DomainSearch = append(c.DomainSearch, fmt.Sprintf("d%02d.%s", i, strings.Repeat("x", 50)+".example.com"))
			}
		}},
		{name: "32 routes and 32 search domains do not fit one reply", edit: bigOptions,
			field: "spec.ipv4Config", msg: "at most 1000 fit in one reply: remove 107 bytes, e.g. entries of spec.ipv4Config.domainSearch"},
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

// maxOptionsPool is test/manifests/harvester-ippool-max-options.yaml: an
// IPPool written for Harvester with every option list at the most its
// schema admits and entries no DHCP option can carry.
func maxOptionsPool(t testing.TB) *v1alpha1.IPPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "manifests", "harvester-ippool-max-options.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p v1alpha1.IPPool
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestOptionWarnings (issue 14): the Harvester manifest is admitted, and
// each entry the agent cannot send as written gets a warning that says what
// the agent does with it.
func TestOptionWarnings(t *testing.T) {
	p := maxOptionsPool(t)
	if es := ValidateIPPoolSpec(p, Options{}); len(es) > 0 {
		t.Fatalf("refused: %v", es)
	}
	ws, err := IPPoolWarnings(context.Background(), Objects{}, admissionv1.Create, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(ws, "\n")
	for _, want := range []string{
		"spec.ipv4Config.dns[2]: dns.google is not an IPv4 address: option 6 carries IPv4 addresses only, so the agent leaves it out",
		"spec.ipv4Config.ntp[3]: ntp_server is neither an IPv4 address nor a host name: option 42 carries IPv4 addresses only, so the agent leaves it out",
		"spec.ipv4Config.ntp: pool.ntp.org., time.example.com: option 42 carries IPv4 addresses only, so the agent resolves host names",
		`spec.ipv4Config.domainSearch[39]: "bad_label.example.com" has the character '_'`,
		"option 119 cannot carry it, so the agent leaves it out",
		"spec.ipv4Config.leaseTime: 4294967295 does not fit option 51's 32 bits: the agent sends 4294967295, an infinite lease",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if len(ws) != 5 {
		t.Errorf("%d warnings, want 5:\n%s", len(ws), got)
	}
	// Harvester's own example: no option warning but the NTP name's.
	ws, _ = IPPoolWarnings(context.Background(), Objects{}, admissionv1.Create, harvesterPool(), nil)
	if len(ws) != 1 || !strings.HasPrefix(ws[0], "spec.ipv4Config.ntp: pool.ntp.org: ") {
		t.Errorf("Harvester's example: warnings %q", ws)
	}
}
