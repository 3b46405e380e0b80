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
