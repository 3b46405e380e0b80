package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Issue 12 item 10: a new pool whose full status could never be written
// is refused, with the maximum in the message; the largest allowed passes,
// and a stored larger pool stays editable.
func TestRangeMustFitStatus(t *testing.T) {
	ctx := context.Background()
	lk := Objects{NADs: []string{"default/example"}}
	pool := func(cidr, start, end string) *v1alpha1.IPPool {
		p := harvesterPool()
		p.Spec.IPv4Config = v1alpha1.IPv4Config{CIDR: cidr, ServerIP: "10.0.0.1",
			Pool: v1alpha1.Pool{Start: v1alpha1.IPv4Address(start), End: v1alpha1.IPv4Address(end)}}
		return p
	}
	for _, p := range []*v1alpha1.IPPool{
		pool("10.0.0.0/8", "10.0.0.2", "10.255.255.254"),
		pool("10.0.0.0/16", "10.0.0.2", "10.0.255.254"),
		pool("10.0.0.0/16", "10.0.0.2", "10.0.64.2"), // 16385 addresses
	} {
		es, err := ValidateIPPool(ctx, lk, Options{}, admissionv1.Create, p, nil)
		if err != nil || !strings.Contains(es.Error(), "spec.ipv4Config.pool.end") || !strings.Contains(es.Error(), "at most 16384") {
			t.Errorf("range %s-%s: got %v %v, want a refusal naming the maximum", p.Spec.IPv4Config.Pool.Start, p.Spec.IPv4Config.Pool.End, es, err)
		}
	}
	ok := pool("10.0.0.0/16", "10.0.0.2", "10.0.64.1") // 16384 addresses
	if es, err := ValidateIPPool(ctx, lk, Options{}, admissionv1.Create, ok, nil); err != nil || len(es) > 0 {
		t.Errorf("range of 16384 addresses refused: %v %v", es, err)
	}
	big := pool("10.0.0.0/16", "10.0.0.2", "10.0.255.254")
	edited := big.DeepCopy()
	edited.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"10.0.0.9"}
	if es, err := ValidateIPPool(ctx, lk, Options{}, admissionv1.Update, edited, big); err != nil || len(es) > 0 {
		t.Errorf("edit of a stored large pool refused: %v %v", es, err)
	}
}
