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

// A dual-stack NIC that got no IPv4 address (the IPv4 range is full) has
// no IPv4 owner for its IPv6 half to follow: the IPv6 half records the
// owner itself (status.ipv6.owners), so a second VMNetCfg with the same MAC
// neither gets nor frees it, and the orphan sweep sees its real owner.
// Before, its IPv6 entry had no owner at all and any VMNetCfg with the MAC
// could take or free it.
func TestDualStackNICWithoutIPv4OwnsItsIPv6(t *testing.T) {
	am, err := ipam.New(ipam.Config{CIDR: "192.168.0.0/24", Start: "192.168.0.10", End: "192.168.0.10"})
	if err != nil {
		t.Fatal(err)
	}
	am6, err := ipam.New6(ipam.Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::20"})
	if err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "ns/net",
		IPv4Config: v1alpha1.IPv4Config{CIDR: "192.168.0.0/24", ServerIP: "192.168.0.2"},
		IPv6Config: &v1alpha1.IPv6Config{CIDR: "fd00::/64"}}}
	var g, g6 ipam.Grant
	if err := AllocateDualOp("02:00:00:00:00:0a", "owner-a", "", "", &g, &g6)(pool, am, am6); err != nil {
		t.Fatal(err) // takes the only IPv4 address
	}
	const mac = "02:00:00:00:00:0b"
	if err := AllocateDualOp(mac, "owner-b", "", "", &g, &g6)(pool, am, am6); !errors.Is(err, ipam.ErrExhausted) || g.IP != "" || g6.IP == "" {
		t.Fatalf("allocate for b: %v (%q, %q); want the IPv4 range exhausted and an IPv6 address", err, g.IP, g6.IP)
	}
	b6 := g6.IP
	if h := am6.Holder(b6); h != "owner-b" {
		t.Fatalf("b's IPv6 address %s recorded for %q, want owner-b", b6, h)
	}
	if err := AllocateDualOp(mac, "owner-c", "", "", &g, &g6)(pool, am, am6); !errors.Is(err, ipam.ErrHeldByOther) || g6.IP != "" {
		t.Fatalf("allocate for c (same MAC): %v (%q); want ErrHeldByOther and no IPv6 address", err, g6.IP)
	}
	if err := ReleaseDualOp(mac, "owner-c")(pool, am, am6); err != nil {
		t.Fatal(err)
	}
	if got, _ := am6.Lookup(mac); got != b6 {
		t.Fatalf("after c's release the MAC holds %q, want b's %s", got, b6)
	}
	fillPoolStatus(pool, am, am6)
	if o := pool.Status.IPv6.Owners[b6]; o != "owner-b" {
		t.Fatalf("status.ipv6.owners[%s] = %q, want owner-b", b6, o)
	}
	// The sweep: b still lists the MAC; c does not count as its owner.
	nicB := NIC{Network: "ns/net", MAC: mac, Owner: "owner-b"}
	nicA := NIC{Network: "ns/net", MAC: "02:00:00:00:00:0a", Owner: "owner-a"}
	if o := Orphans6(pool, Owned{nicA: true, nicB: true}); len(o) != 0 {
		t.Fatalf("orphans with b alive: %+v", o)
	}
	nicC := NIC{Network: "ns/net", MAC: mac, Owner: "owner-c"}
	o := Orphans6(pool, Owned{nicA: true, nicC: true})
	if len(o) != 1 || o[0].IP != b6 || o[0].Owner != "owner-b" {
		t.Fatalf("orphans with b gone: %+v, want %s owned by owner-b", o, b6)
	}
	if freed := releaseOrphans6(am, am6, o); len(freed) != 1 {
		t.Fatalf("the sweep freed %v, want b's %s", freed, b6)
	}
	// b's own release frees it (nothing else to hold it for).
	if err := AllocateDualOp(mac, "owner-b", "", "", &g, &g6)(pool, am, am6); g6.IP == "" {
		t.Fatalf("allocate for b again: %v", err)
	}
	if err := ReleaseDualOp(mac, "owner-b")(pool, am, am6); err != nil {
		t.Fatal(err)
	}
	if got, ok := am6.Lookup(mac); ok {
		t.Fatalf("after b's release the MAC still holds %s", got)
	}
}
