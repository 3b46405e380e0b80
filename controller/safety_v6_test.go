package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// The issue-12 guarantees for the IPv6 half of a pool (issue 15).

// ipv6OnlyPool is an IPv6-only pool with the valid lifetime validSec (0:
// the default).
func ipv6OnlyPool(ns, name, network, start, end string, validSec int) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha1.IPPoolSpec{NetworkName: network}}
	withIPv6(p, start, end)
	if validSec > 0 {
		p.Spec.IPv6Config.PreferredLifetime = ptr.To(validSec / 2)
		p.Spec.IPv6Config.ValidLifetime = ptr.To(validSec)
	}
	return p
}

// allocated6Is checks the Allocated condition and one NIC's IPv6 address.
func allocated6Is(status corev1.ConditionStatus, reason, mac, ip6 string, state v1alpha1.NetworkConfigState) func(*v1alpha1.VirtualMachineNetworkConfig) error {
	return func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if c := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated); c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Allocated = %+v", c)
		}
		return nicIs(mac, "", ip6, state)(v)
	}
}

// Pure unit test: in an IPv6-only pool the release checks the IPv6 owner
// (there is no IPv4 owner to follow). Before status.ipv6.owners, deleting
// one of two VMNetCfgs sharing a MAC freed the other's IPv6 address.
func TestReleaseDualOpIPv6OnlyChecksOwner(t *testing.T) {
	am6, err := ipam.New6(ipam.Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::20", Quarantine: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := ipv6OnlyPool("ns", "p", "ns/net", "fd00::10", "fd00::20", 3600)
	const mac = "02:00:00:00:00:01"
	var g, g6 ipam.Grant
	if err := AllocateDualOp(mac, "owner-a", "", "", &g, &g6)(pool, nil, am6); err != nil || g6.IP != "fd00::10" {
		t.Fatalf("allocate for a: %v (%+v)", err, g6)
	}
	if err := AllocateDualOp(mac, "owner-b", "", "", &g, &g6)(pool, nil, am6); !errors.Is(err, ipam.ErrHeldByOther) || g6.IP != "" {
		t.Fatalf("allocate for b: %v (%+v); want ErrHeldByOther and no address", err, g6)
	}
	if err := ReleaseDualOp(mac, "owner-b")(pool, nil, am6); err != nil {
		t.Fatal(err)
	}
	if got, _ := am6.Lookup(mac); got != "fd00::10" {
		t.Fatalf("after b's release the MAC holds %q, want a's fd00::10", got)
	}
	if err := ReleaseDualOp(mac, "owner-a")(pool, nil, am6); err != nil {
		t.Fatal(err)
	}
	if got, ok := am6.Lookup(mac); ok {
		t.Fatalf("after a's release the MAC still holds %s", got)
	}
	fillPoolStatus(pool, nil, am6)
	if r := pool.Status.IPv6.Released["fd00::10"]; r.MAC != mac {
		t.Fatalf("status.ipv6.released = %v, want fd00::10 quarantined for %s", pool.Status.IPv6.Released, mac)
	}
}

// Pure unit test: what fillIPv6 writes, buildIPAM6 reads back (a restart,
// a leader change), and a lowered valid lifetime is recorded as
// longerLeasesUntil. An IPv4-only pool's status has no trace of it.
func TestIPv6StatusRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := func() time.Time { return now }
	pool := ipv6OnlyPool("ns", "p", "ns/net", "fd00:100::10", "fd00:100::11", 86400)
	am, am6, dropped, err := buildPoolIPAMs(pool, clk)
	if err != nil || len(dropped) != 0 {
		t.Fatal(err, dropped)
	}
	if _, err := am6.AllocateFor("02:00:00:00:00:0a", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := am6.AllocateFor("02:00:00:00:00:0b", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := am6.ReleaseFor("02:00:00:00:00:0a", "a"); err != nil {
		t.Fatal(err)
	}
	fillPoolStatus(pool, am, am6)
	st := pool.Status.IPv6
	if pool.Status.IPv4 != nil || st.ValidLifetime == nil || *st.ValidLifetime != 86400 || st.Owners["fd00:100::11"] != "b" ||
		st.Released["fd00:100::10"].MAC != "02:00:00:00:00:0a" || st.Released["fd00:100::10"].Lease != nil || st.LongerLeasesUntil != nil {
		b, _ := json.Marshal(pool.Status)
		t.Fatalf("status %s", b)
	}
	// The valid lifetime lowered to a minute; an hour later the rebuilt
	// IPAM still keeps fd00:100::10 from other MACs, and records why.
	pool.Spec.IPv6Config.PreferredLifetime, pool.Spec.IPv6Config.ValidLifetime = ptr.To(30), ptr.To(60)
	now = now.Add(time.Hour)
	_, am6, _, err = buildPoolIPAMs(pool, clk)
	if err != nil {
		t.Fatal(err)
	}
	if got := am6.Holder("fd00:100::11"); got != "b" {
		t.Fatalf("holder after rebuild %q, want b", got)
	}
	if err := am6.AllocateIPFor("fd00:100::10", "02:00:00:00:00:0c", "c"); !errors.Is(err, ipam.ErrQuarantined) {
		t.Fatalf("an hour after a release under a day-long valid lifetime: %v, want ErrQuarantined", err)
	}
	fillPoolStatus(pool, am, am6)
	st = pool.Status.IPv6
	if *st.ValidLifetime != 60 || st.Released["fd00:100::10"].Lease == nil || *st.Released["fd00:100::10"].Lease != 86400 ||
		st.LongerLeasesUntil == nil || !st.LongerLeasesUntil.Time.Equal(now.Add(24*time.Hour+agentLagMargin)) {
		b, _ := json.Marshal(pool.Status.IPv6)
		t.Fatalf("status after lowering %s", b)
	}

	v4 := newPool("ns", "p4", "ns/net", "192.168.100.10", "192.168.100.20")
	am, am6, _, err = buildPoolIPAMs(v4, clk)
	if err != nil || am6 != nil {
		t.Fatal(err, am6)
	}
	fillPoolStatus(v4, am, am6)
	if b, _ := json.Marshal(v4.Status); strings.Contains(string(b), "ipv6") || strings.Contains(string(b), "validLifetime") {
		t.Fatalf("IPv4-only status mentions IPv6: %s", b)
	}
}

// Pure unit test: a pool whose spec.networkName is a bare name (default/
// is implied, as Harvester reads it) has no IPv6 orphans while a VMNetCfg
// lists the MAC. Orphans6 compared the raw field and called every IPv6
// allocation of such a pool an orphan.
func TestOrphans6BareNetworkName(t *testing.T) {
	pool := ipv6OnlyPool("default", "p", "net", "fd00:100::10", "fd00:100::11", 3600)
	pool.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: map[string]string{"fd00:100::10": "02:00:00:00:00:0a"},
		Owners: map[string]string{"fd00:100::10": ownerToken("uid-a")}}
	cfg := newVMNetCfg("default", "a", nic("net", "02:00:00:00:00:0a"))
	cfg.UID = "uid-a"
	if got := Orphans6(pool, OwnedNICs([]v1alpha1.VirtualMachineNetworkConfig{*cfg})); len(got) != 0 {
		t.Fatalf("orphans %v, want none", got)
	}
	// Another VMNetCfg with the same MAC does not own a's entry.
	cfg.UID = "uid-b"
	if got := Orphans6(pool, OwnedNICs([]v1alpha1.VirtualMachineNetworkConfig{*cfg})); len(got) != 1 || got[0].Owner != ownerToken("uid-a") {
		t.Fatalf("orphans %v, want a's entry", got)
	}
}

// Issue 12 item 1 for IPv6: VMNetCfg a (MAC m) is deleted between the
// sweep's two reads, b with the same MAC is created after the list and
// gets the same IPv6 address: the queued sweep must not free it. In an
// IPv6-only pool the owner is status.ipv6.owners'; in a dual-stack pool the
// IPv4 owner of the MAC.
func TestSweepSparesSameMACRecreatedIPv6(t *testing.T) {
	for _, dual := range []bool{false, true} {
		t.Run(fmt.Sprintf("dual=%v", dual), func(t *testing.T) {
			ctx := context.Background()
			ctl := startController(t, managerOpts{sweep: time.Hour}) // the test runs the sweep itself
			ns := newNamespace(t)
			createNAD(t, ns, "net", nil)
			net := ns + "/net"
			pool := ipv6OnlyPool(ns, "pool", net, "fd00:100::10", "fd00:100::20", 0)
			ip4 := ""
			if dual {
				pool.Spec.IPv4Config = newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20").Spec.IPv4Config
				ip4 = "192.168.100.10"
			}
			create(t, pool)
			pk := client.ObjectKeyFromObject(pool)
			waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
			const mac = "02:00:00:00:00:0a"
			a := newVMNetCfg(ns, "a", nic(net, mac))
			create(t, a)
			waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated", nicIs(mac, ip4, "fd00:100::10", v1alpha1.StateAllocated))

			b := newVMNetCfg(ns, "b", nic(net, mac))
			reader := listHook{Reader: k8s, after: func(l client.ObjectList) {
				switch l.(type) {
				case *v1alpha1.IPPoolList: // between the two reads: a goes
					deleteAndWait(t, a)
				case *v1alpha1.VirtualMachineNetworkConfigList: // after the list: b comes
					create(t, b)
					// Its MAC gets its quarantined addresses back.
					waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b allocated", nicIs(mac, ip4, "fd00:100::10", v1alpha1.StateAllocated))
				}
			}}
			sw := &OrphanSweeper{Reader: reader, Store: ctl.store}
			n, err := sw.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("sweep released %d allocations, want 0", n)
			}
			if got := poolAllocated6(t, pk); got["fd00:100::10"] != mac {
				t.Fatalf("b's IPv6 allocation was freed by the sweep: pool records %v while b shows fd00:100::10", got)
			}
			// A real orphan (its owner gone for good) is still released.
			deleteAndWait(t, b)
			eventually(t, 10*time.Second, "inject a leaked entry", func() error {
				p := getPool(t, pk)
				if p.Status.IPv6.Allocated == nil {
					p.Status.IPv6.Allocated = map[string]string{}
				}
				p.Status.IPv6.Allocated["fd00:100::15"] = "02:00:00:00:00:ff"
				if !dual {
					p.Status.IPv6.Owners = map[string]string{"fd00:100::15": "gone"}
				}
				return k8s.Status().Update(ctx, p)
			})
			// (Other tests' pools are swept too: the count is not checked.)
			if _, err := (&OrphanSweeper{Reader: k8s, Store: ctl.store}).Sweep(ctx); err != nil {
				t.Fatalf("sweep of a real orphan: %v", err)
			}
			if got := poolAllocated6(t, pk); len(got) != 0 {
				t.Fatalf("status.ipv6 after the sweep: %v", got)
			}
		})
	}
}

// Issue 12 item 1 for IPv6, the finalizer: in an IPv6-only pool a
// VMNetCfg with the MAC of another is refused (MACHeldByOther), and
// deleting it leaves the other's IPv6 address alone.
func TestFinalizerSparesOtherOwnerIPv6Only(t *testing.T) {
	startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := ipv6OnlyPool(ns, "pool", net, "fd00:100::10", "fd00:100::20", 3600)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	const mac = "02:00:00:00:00:0a"
	a := newVMNetCfg(ns, "a", nic(net, mac))
	create(t, a)
	ak := client.ObjectKeyFromObject(a)
	waitVMNetCfg(t, ak, "a allocated", allocated6Is(corev1.ConditionTrue, ReasonAllocated, mac, "fd00:100::10", v1alpha1.StateAllocated))
	b := newVMNetCfg(ns, "b", nic(net, mac))
	create(t, b)
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b refused", allocated6Is(corev1.ConditionFalse, ReasonMACHeldByOther, mac, "", v1alpha1.StatePending))
	if o := getPool(t, pk).Status.IPv6.Owners["fd00:100::10"]; o != ownerToken(getVNC(t, ak).UID) {
		t.Fatalf("status.ipv6.owners records %q for a's address, want a's UID", o)
	}
	deleteAndWait(t, getVNC(t, client.ObjectKeyFromObject(b)))
	if got := poolAllocated6(t, pk); got["fd00:100::10"] != mac {
		t.Fatalf("b's deletion freed a's IPv6 address: pool records %v", got)
	}
	waitVMNetCfg(t, ak, "a keeps its address", allocated6Is(corev1.ConditionTrue, ReasonAllocated, mac, "fd00:100::10", v1alpha1.StateAllocated))

	// The other way round: c waits for a's MAC, and is woken when a goes
	// (the IPv6 available count rises) and gets the address back.
	c := newVMNetCfg(ns, "c", nic(net, mac))
	create(t, c)
	ck := client.ObjectKeyFromObject(c)
	waitVMNetCfg(t, ck, "c refused", allocated6Is(corev1.ConditionFalse, ReasonMACHeldByOther, mac, "", v1alpha1.StatePending))
	deleteAndWait(t, getVNC(t, ak))
	waitVMNetCfg(t, ck, "c gets the MAC's address", allocated6Is(corev1.ConditionTrue, ReasonAllocated, mac, "fd00:100::10", v1alpha1.StateAllocated))
}

// Issue 12 item 3 for IPv6: a released IPv6 address does not go to another
// MAC within the valid lifetime, also after a controller restart; its own
// MAC gets it back; when nothing else is free it is given, with an event.
func TestReleasedIPv6AddressQuarantined(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := ipv6OnlyPool(ns, "pool", net, "fd00:100::10", "fd00:100::13", 3600)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	alloc := func(name, mac, want string) {
		t.Helper()
		create(t, newVMNetCfg(ns, name, nic(net, mac)))
		waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: name}, name+" allocated",
			allocated6Is(corev1.ConditionTrue, ReasonAllocated, mac, want, v1alpha1.StateAllocated))
	}
	alloc("a", "02:00:00:00:00:0a", "fd00:100::10")
	alloc("b", "02:00:00:00:00:0b", "fd00:100::11")
	deleteAndWait(t, getVNC(t, types.NamespacedName{Namespace: ns, Name: "a"}))
	alloc("c", "02:00:00:00:00:0c", "fd00:100::12")
	if r := getPool(t, pk).Status.IPv6.Released["fd00:100::10"]; r.MAC != "02:00:00:00:00:0a" {
		t.Fatalf("status.ipv6.released = %v, want fd00:100::10 for a's MAC", getPool(t, pk).Status.IPv6.Released)
	}

	// A new controller (restart, or another leader) knows of the quarantine.
	ctl.stop()
	startController(t, managerOpts{sweep: time.Hour})
	// Asked for by another MAC: refused.
	create(t, newVMNetCfg(ns, "x", nic6(net, "02:00:00:00:00:0f", "fd00:100::10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "x"}, "x refused",
		allocated6Is(corev1.ConditionFalse, ReasonAddressTaken, "02:00:00:00:00:0f", "", v1alpha1.StatePending))
	deleteAndWait(t, getVNC(t, types.NamespacedName{Namespace: ns, Name: "x"}))
	alloc("d", "02:00:00:00:00:0d", "fd00:100::13")
	// The MAC that released it gets it back.
	alloc("a2", "02:00:00:00:00:0a", "fd00:100::10")
	deleteAndWait(t, getVNC(t, types.NamespacedName{Namespace: ns, Name: "a2"}))
	// Nothing else is free: it is given early, and the event says so.
	alloc("e", "02:00:00:00:00:0e", "fd00:100::10")
	eventually(t, 10*time.Second, "early-reuse event", func() error {
		return hasEvent(ns, "e", ReasonEarlyReuse, "fd00:100::10")
	})
}

// Issue 12 item 4 for IPv6: a spec change while the pool is paused drops
// an IPv6 allocation: the pool and the VMNetCfg say so, the VMNetCfg no
// longer shows it and gets a new one on unpause, and the dropped address
// stays quarantined for its MAC when the exclude is removed again.
func TestDroppedIPv6AllocationReportedAndQuarantined(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns, net, pk, ak := droppedIPv6Setup(t)

	setPaused(t, pk, true)
	waitPoolCondition(t, pk, v1alpha1.Stopped, corev1.ConditionTrue)
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) {
		p.Spec.IPv6Config.Pool.Exclude = []v1alpha1.IPv6Address{"fd00:100::10"}
	})
	waitVMNetCfg(t, ak, "a no longer shows the dropped address",
		allocated6Is(corev1.ConditionFalse, ReasonAllocationDropped, macA, "", v1alpha1.StatePending))
	p := waitPoolCondition(t, pk, v1alpha1.AllocationsDropped, corev1.ConditionTrue)
	if c := v1alpha1.FindCondition(p.Status.Conditions, v1alpha1.AllocationsDropped); c == nil || !strings.Contains(c.Message, "fd00:100::10="+macA) {
		t.Errorf("pool condition %+v does not name the dropped allocation", c)
	}
	if r := p.Status.IPv6.Released["fd00:100::10"]; r.MAC != macA {
		t.Fatalf("status.ipv6.released = %v, want fd00:100::10 quarantined for %s", p.Status.IPv6.Released, macA)
	}
	eventually(t, 10*time.Second, "pool event", func() error { return hasEvent(ns, "pool", ReasonAllocationDropped, "fd00:100::10") })

	setPaused(t, pk, false)
	waitVMNetCfg(t, ak, "a allocated again", allocated6Is(corev1.ConditionTrue, ReasonAllocated, macA, "fd00:100::11", v1alpha1.StateAllocated))
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv6Config.Pool.Exclude = nil })
	create(t, newVMNetCfg(ns, "b", nic6(net, "02:00:00:00:00:0b", "fd00:100::10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "b"}, "b refused a's old address",
		allocated6Is(corev1.ConditionFalse, ReasonAddressTaken, "02:00:00:00:00:0b", "", v1alpha1.StatePending))
	create(t, newVMNetCfg(ns, "c", nic(net, "02:00:00:00:00:0c")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "c"}, "c allocated another address",
		allocated6Is(corev1.ConditionTrue, ReasonAllocated, "02:00:00:00:00:0c", "fd00:100::12", v1alpha1.StateAllocated))
}

// macA is the MAC of VMNetCfg a in droppedIPv6Setup.
const macA = "02:00:00:00:00:0a"

// droppedIPv6Setup makes an IPv6-only pool fd00:100::10-12 on a new
// namespace's network and VMNetCfg a (macA) allocated fd00:100::10.
func droppedIPv6Setup(t *testing.T) (ns, net string, pk, ak types.NamespacedName) {
	t.Helper()
	ns = newNamespace(t)
	createNAD(t, ns, "net", nil)
	net = ns + "/net"
	pool := ipv6OnlyPool(ns, "pool", net, "fd00:100::10", "fd00:100::12", 3600)
	create(t, pool)
	pk = client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	create(t, newVMNetCfg(ns, "a", nic(net, macA)))
	ak = types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated", allocated6Is(corev1.ConditionTrue, ReasonAllocated, macA, "fd00:100::10", v1alpha1.StateAllocated))
	return ns, net, pk, ak
}

// The same drop on a running pool (the webhook bypassed): the VMNetCfg is
// woken and allocated again at once, and says so.
func TestDroppedIPv6AllocationOnRunningPoolIsReallocated(t *testing.T) {
	startController(t, managerOpts{sweep: time.Hour})
	ns, _, pk, ak := droppedIPv6Setup(t)
	eventually(t, 10*time.Second, "exclude fd00:100::10", func() error {
		p := getPool(t, pk)
		p.Spec.IPv6Config.Pool.Exclude = []v1alpha1.IPv6Address{"fd00:100::10"}
		return k8s.Update(context.Background(), p)
	})
	waitVMNetCfg(t, ak, "a reallocated", allocated6Is(corev1.ConditionTrue, ReasonReallocated, macA, "fd00:100::11", v1alpha1.StateAllocated))
	eventually(t, 10*time.Second, "vmnetcfg event", func() error { return hasEvent(ns, "a", ReasonAllocationDropped, "fd00:100::11") })
	waitPoolCondition(t, pk, v1alpha1.AllocationsDropped, corev1.ConditionTrue)
}
