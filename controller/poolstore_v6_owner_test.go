package controller

import (
	"errors"
	"testing"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// In a dual-stack pool the IPv6 half follows the IPv4 owner check: a second
// VMNetCfg with the same MAC neither gets nor frees the first one's IPv6
// address.
func TestDualOpsFollowIPv4Owner(t *testing.T) {
	am, err := ipam.New(ipam.Config{CIDR: "192.168.0.0/24", Start: "192.168.0.10", End: "192.168.0.20"})
	if err != nil {
		t.Fatal(err)
	}
	am6, err := ipam.New6(ipam.Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::20"})
	if err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{}
	const mac = "02:00:00:00:00:01"
	var g, g6 ipam.Grant
	if err := AllocateDualOp(mac, "owner-a", "", "", &g, &g6)(pool, am, am6); err != nil || g.IP == "" || g6.IP == "" {
		t.Fatalf("allocate for a: %v (%q, %q)", err, g.IP, g6.IP)
	}
	first6 := g6.IP
	if err := AllocateDualOp(mac, "owner-b", "", "", &g, &g6)(pool, am, am6); !errors.Is(err, ipam.ErrHeldByOther) || g6.IP != "" {
		t.Fatalf("allocate for b: err %v, ipv6 %q; want ErrHeldByOther and no IPv6 address", err, g6.IP)
	}
	if err := ReleaseDualOp(mac, "owner-b")(pool, am, am6); err != nil {
		t.Fatal(err)
	}
	if got, _ := am6.Lookup(mac); got != first6 {
		t.Fatalf("after b's release the IPv6 address of a is %q, want %q", got, first6)
	}
	if err := ReleaseDualOp(mac, "owner-a")(pool, am, am6); err != nil {
		t.Fatal(err)
	}
	if got, ok := am6.Lookup(mac); ok {
		t.Fatalf("after a's release the MAC still holds %s", got)
	}
	if got, ok := am.Lookup(mac); ok {
		t.Fatalf("after a's release the MAC still holds %s", got)
	}
}
