package controller

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// The quarantine survives the round trip through the status exactly (a
// rebuilt IPAM writes the same status, so no write happens for nothing),
// across a lowered lease time and a dropped allocation, and the rebuilt
// IPAM still keeps the addresses from other MACs.
func TestQuarantineStatusRoundTrip(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 400_000_000, time.UTC)} // not a whole second
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "ns/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "10.0.0.1", CIDR: "10.0.0.0/24", LeaseTime: ptr.To(3600),
			Pool: v1alpha1.Pool{Start: "10.0.0.10", End: "10.0.0.14"},
		}},
	}
	build := func() *ipam.Pool {
		t.Helper()
		am, _, err := buildIPAM(pool, clk.now)
		if err != nil {
			t.Fatal(err)
		}
		return am
	}
	// write fills the status from am, as a status write does, and checks
	// that a rebuild from it writes the same status.
	write := func(am *ipam.Pool) {
		t.Helper()
		fillIPv4(pool, am)
		again := pool.DeepCopy()
		fillIPv4(again, build())
		if !equality.Semantic.DeepEqual(pool.Status, again.Status) {
			t.Fatalf("rebuilt IPAM writes another status:\n%+v\n%+v", pool.Status.IPv4, again.Status.IPv4)
		}
	}
	am := build()
	for _, mac := range []string{"02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"} {
		if _, err := am.AllocateFor(mac, "uid-"+mac); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := am.ReleaseFor("02:00:00:00:00:0a", "uid-02:00:00:00:00:0a"); err != nil {
		t.Fatal(err)
	}
	write(am)
	if r := pool.Status.IPv4.Released["10.0.0.10"]; r.Lease != nil || *pool.Status.IPv4.LeaseTime != 3600 {
		t.Fatalf("entry %+v under leaseTime %d: want no lease of its own", r, *pool.Status.IPv4.LeaseTime)
	}

	// Lease time lowered to a minute; b's address excluded.
	pool.Spec.IPv4Config.LeaseTime = ptr.To(60)
	pool.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"10.0.0.11"}
	clk.add(10 * time.Second)
	am = build()
	write(am)
	st := pool.Status.IPv4
	if r := st.Released["10.0.0.10"]; r.Lease == nil || *r.Lease != 3600 {
		t.Fatalf("released entry %+v: want its hour-long lease recorded", r)
	}
	if r := st.Released["10.0.0.11"]; r.MAC != "02:00:00:00:00:0b" || r.Lease == nil || *r.Lease < 3600 {
		t.Fatalf("dropped allocation %+v: want it quarantined for b for the hour-long lease", r)
	}
	if st.LongerLeasesUntil == nil || st.LongerLeasesUntil.Sub(clk.now()) < time.Hour-time.Second {
		t.Fatalf("longerLeasesUntil %v, want an hour from the lowering", st.LongerLeasesUntil)
	}
	clk.add(30 * time.Minute)
	write(build())
	pool.Spec.IPv4Config.Pool.Exclude = nil
	am = build()
	for _, ip := range []string{"10.0.0.10", "10.0.0.11"} {
		if err := am.AllocateIPFor(ip, "02:00:00:00:00:0d", "uid-d"); !errors.Is(err, ipam.ErrQuarantined) {
			t.Fatalf("%s half an hour later, for another MAC: %v, want ErrQuarantined", ip, err)
		}
	}
	// c released now, under the minute-long lease time: its last lease may
	// still be an hour-long one granted before the lowering.
	if _, err := am.ReleaseFor("02:00:00:00:00:0c", "uid-02:00:00:00:00:0c"); err != nil {
		t.Fatal(err)
	}
	write(am)
	clk.add(2 * time.Minute)
	if err := build().AllocateIPFor("10.0.0.12", "02:00:00:00:00:0d", "uid-d"); !errors.Is(err, ipam.ErrQuarantined) {
		t.Fatalf("c's address 2 min after its release, longer leases still running: %v, want ErrQuarantined", err)
	}
	clk.add(time.Hour)
	am = build()
	write(am)
	if len(pool.Status.IPv4.Released) != 0 || pool.Status.IPv4.LongerLeasesUntil != nil {
		t.Fatalf("after the longer leases ended: released %v, longerLeasesUntil %v", pool.Status.IPv4.Released, pool.Status.IPv4.LongerLeasesUntil)
	}
}
