package webhook

import (
	"strings"
	"testing"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func v6OnlyPool() *v1alpha1.IPPool {
	return &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "default/v6", IPv6Config: &v1alpha1.IPv6Config{
		CIDR: "fd00:100::/64", ServerIP: "fd00:100::2", Pool: v1alpha1.IPv6Pool{Start: "fd00:100::100", End: "fd00:100::ffff"}}}}
}

// An IPv6-only pool needs no IPv4 half; a pool with neither is still refused
// with the IPv4 messages it always had.
func TestIPv6OnlyPoolValid(t *testing.T) {
	if es := ValidateIPPoolSpec(v6OnlyPool(), Options{}); len(es) > 0 {
		t.Fatalf("IPv6-only pool refused: %v", es)
	}
	none := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "default/x"}}
	if es := ValidateIPPoolSpec(none, Options{}); len(es) == 0 || !strings.Contains(es.Error(), "spec.ipv4Config.cidr: is required") {
		t.Fatalf("pool with neither half: %v", es)
	}
	// A half-written IPv4 half beside an IPv6 half is checked, not ignored.
	half := v6OnlyPool()
	half.Spec.IPv4Config.ServerIP = "10.0.0.2"
	if es := ValidateIPPoolSpec(half, Options{}); !strings.Contains(es.Error(), "spec.ipv4Config.cidr") {
		t.Fatalf("partial ipv4Config beside ipv6Config: %v", es)
	}
}

func TestLifetimes(t *testing.T) {
	p := func(v int) *int { return &v }
	for _, tc := range []struct {
		pref, valid *int
		wp, wv      int
	}{
		{nil, nil, 1800, 3600},
		{p(600), nil, 600, 3600},
		{p(7200), nil, 7200, 7200},
		{nil, p(600), 300, 600},
		{p(100), p(200), 100, 200},
	} {
		c := v1alpha1.IPv6Config{PreferredLifetime: tc.pref, ValidLifetime: tc.valid}
		if gp, gv := c.Lifetimes(); gp != tc.wp || gv != tc.wv {
			t.Errorf("Lifetimes(%v,%v) = %d,%d; want %d,%d", tc.pref, tc.valid, gp, gv, tc.wp, tc.wv)
		}
	}
}

// Removing either half of a dual-stack pool that holds allocations in it is
// refused unless the pool is paused.
func TestRemovingAHalfStrands(t *testing.T) {
	dual := v6OnlyPool()
	dual.Spec.IPv4Config = v1alpha1.IPv4Config{CIDR: "10.0.0.0/24", ServerIP: "10.0.0.2", Pool: v1alpha1.Pool{Start: "10.0.0.10", End: "10.0.0.20"}}
	dual.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"10.0.0.10": "02:00:00:00:00:01"}}
	dual.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: map[string]string{"fd00:100::100": "02:00:00:00:00:01"}}
	no4 := dual.DeepCopy()
	no4.Spec.IPv4Config = v1alpha1.IPv4Config{}
	if es := strandedAllocationsV6(dual, no4); len(es) != 1 || es[0].Field != "spec.ipv4Config" {
		t.Fatalf("removing ipv4Config: %v", es)
	}
	no6 := dual.DeepCopy()
	no6.Spec.IPv6Config = nil
	if es := strandedAllocationsV6(dual, no6); len(es) != 1 || es[0].Field != "spec.ipv6Config" {
		t.Fatalf("removing ipv6Config: %v", es)
	}
	paused := true
	no6.Spec.Paused = &paused
	if es := strandedAllocationsV6(dual, no6); len(es) != 0 {
		t.Fatalf("paused pool: %v", es)
	}
}
