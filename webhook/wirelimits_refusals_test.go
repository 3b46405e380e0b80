package webhook_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Issue 12 items 13-15 against the real API server: the webhook refuses
// options that cannot fit one DHCP reply.
func TestWireLimitRefusals(t *testing.T) {
	needCluster(t)
	const ns = "wirelimits"
	nad(t, ns, "net")
	pool := func(edit func(c *v1alpha1.IPv4Config)) *v1alpha1.IPPool {
		p := &v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pool"},
			Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net", IPv4Config: v1alpha1.IPv4Config{
				CIDR: "10.60.0.0/24", ServerIP: "10.60.0.2", Router: "10.60.0.1",
				Pool: v1alpha1.Pool{Start: "10.60.0.10", End: "10.60.0.100"}, LeaseTime: ptr.To(300),
			}},
		}
		edit(&p.Spec.IPv4Config)
		return p
	}
	big := func(c *v1alpha1.IPv4Config) {
		for i := range 32 {
			c.Routes = append(c.Routes, v1alpha1.Route{Destination: fmt.Sprintf("10.%d.0.0/16", 100+i), Gateway: "10.60.0.1"})
			c.DomainSearch = append(c.DomainSearch, fmt.Sprintf("search-domain-number-%02d.example.com", i))
		}
	}
	ctx := context.Background()
	cases := []struct {
		name, field, value string
		edit               func(c *v1alpha1.IPv4Config)
		schema             bool
	}{
		{name: "options too large for one reply", field: "spec.ipv4Config", edit: big},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, pool(tc.edit))
			assertRefused(t, err, tc.field, tc.value, !tc.schema)
			t.Logf("refused: %v", err)
		})
	}
	// What the agent cannot send is admitted (issue 14, as Harvester
	// admits it): TestHarvesterMaxOptions checks the warnings.
	t.Run("lease beyond 32 bits and a 64-character label pass", func(t *testing.T) {
		p := pool(func(c *v1alpha1.IPv4Config) {
			c.LeaseTime = ptr.To(4294967295)
			c.DomainSearch = []string{strings.Repeat("a", 64) + ".example."}
		})
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatalf("refused: %v", err)
		}
		_ = k8s.Delete(ctx, p)
	})
}
