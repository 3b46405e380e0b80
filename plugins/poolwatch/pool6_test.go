package poolwatch

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// The IPv6 half survives a snapshot round trip, so an agent restarted
// during an API outage still serves its DHCPv6 clients.
func TestSnapshotKeepsIPv6(t *testing.T) {
	ipp := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dual", ResourceVersion: "7"},
		Spec: v1alpha1.IPPoolSpec{IPv6Config: &v1alpha1.IPv6Config{CIDR: "fd00:100::/64", ServerIP: "fd00:100::2",
			Pool: v1alpha1.IPv6Pool{Start: "fd00:100::10", End: "fd00:100::ff"}, DNS: []v1alpha1.IPv6Address{"fd00:100::53"}}},
		Status: v1alpha1.IPPoolStatus{IPv6: &v1alpha1.IPv6Status{Allocated: map[string]string{
			"fd00:100::10": "02:00:00:00:00:0a", "fd00:100:0::11": "02:00:00:00:00:0a", "fd00:100::2": "RESERVED"}}},
	}
	p, _ := FromIPPool(ipp)
	path := filepath.Join(t.TempDir(), "snapshot.json")
	if err := WriteSnapshot(path, p, time.Now()); err != nil {
		t.Fatal(err)
	}
	back, _, _ := ReadSnapshot(path, "default", "dual")
	p6, err := back.IPv6()
	if p6.Prefix != netip.MustParsePrefix("fd00:100::/64") || len(p6.DNS) != 1 || p6.ValidLifetime != time.Hour {
		t.Fatalf("IPv6 half after the snapshot: %+v", p6)
	}
	// The MAC listed twice keeps the lower address, and says so.
	if a, ok := p6.Lease(net.HardwareAddr{2, 0, 0, 0, 0, 0x0a}); !ok || a != netip.MustParseAddr("fd00:100::10") || err == nil {
		t.Fatalf("lease = %s %v, err %v", a, ok, err)
	}
}

// A raise of the valid lifetime is served only once the controller has
// recorded it in status.ipv6.validLifetime (it counts the quarantine of
// released IPv6 addresses from it), as status.ipv4.leaseTime caps the
// IPv4 lease; a lowering is served at once; the preferred lifetime never
// exceeds the valid one served.
func TestFromIPPool6ValidLifetimeCappedByStatus(t *testing.T) {
	for _, c := range []struct {
		name             string
		pref, valid      *int
		recorded         *int64
		wantPref, wantVL time.Duration
	}{
		{"raise not recorded yet", ptrTo(43200), ptrTo(86400), ptrTo[int64](600), 10 * time.Minute, 10 * time.Minute},
		{"raise recorded", ptrTo(43200), ptrTo(86400), ptrTo[int64](86400), 12 * time.Hour, 24 * time.Hour},
		{"lowering served at once", ptrTo(300), ptrTo(600), ptrTo[int64](86400), 5 * time.Minute, 10 * time.Minute},
		{"no recorded lifetime", ptrTo(43200), ptrTo(86400), nil, 12 * time.Hour, 24 * time.Hour},
		{"defaults, recorded lower", nil, nil, ptrTo[int64](1200), 20 * time.Minute, 20 * time.Minute},
		{"recorded zero ignored", ptrTo(60), ptrTo(120), ptrTo[int64](0), time.Minute, 2 * time.Minute},
	} {
		ipp := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "v6"},
			Spec: v1alpha1.IPPoolSpec{IPv6Config: &v1alpha1.IPv6Config{CIDR: "fd00:100::/64", ServerIP: "fd00:100::2",
				Pool: v1alpha1.IPv6Pool{Start: "fd00:100::10", End: "fd00:100::ff"}, PreferredLifetime: c.pref, ValidLifetime: c.valid}},
			Status: v1alpha1.IPPoolStatus{IPv6: &v1alpha1.IPv6Status{ValidLifetime: c.recorded}}}
		p, err := FromIPPool6(ipp)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.PreferredLifetime != c.wantPref || p.ValidLifetime != c.wantVL {
			t.Errorf("%s: serves %s/%s, want %s/%s", c.name, p.PreferredLifetime, p.ValidLifetime, c.wantPref, c.wantVL)
		}
	}
}
