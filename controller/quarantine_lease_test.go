package controller

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Review 12 (R1): the lease time raised and lowered back ("undo") while
// the controller is down. The agent reads spec.ipv4Config.leaseTime
// directly, so during the raise it grants a day-long lease; the controller
// comes back, sees status.ipv4.leaseTime 60 = spec 60 and assumes nothing
// longer ever ran: a minute after the release the address goes to another
// VM while the guest still holds it for a day.
// Fix: the agent serves min(spec leaseTime, status.ipv4.leaseTime) (a raise
// takes effect only once the controller has recorded it in the status).
func TestQuarantineAfterLeaseTimeRaisedAndLoweredWhileDown(t *testing.T) {
	clk := &testClock{t: time.Now()}
	ctl := startController(t, managerOpts{sweep: time.Hour, now: clk.now})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.11")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(60)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	create(t, newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a")))
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0a": "192.168.100.10"}, v1alpha1.StateAllocated))

	ctl.stop()
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(86400) })
	// What the agent serves from the pool as it now stands: a renews.
	served, err := poolwatch.FromIPPool(getPool(t, pk))
	if err != nil {
		t.Fatal(err)
	}
	granted, lease := clk.now(), served.LeaseTime
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(60) })
	startController(t, managerOpts{sweep: time.Hour, now: clk.now})
	clk.add(time.Minute)
	deleteAndWait(t, getVNC(t, ak))
	clk.add(2 * time.Minute)
	if !clk.now().Before(granted.Add(lease)) {
		t.Logf("the agent granted a %s lease, over by now: b may get the address", lease)
		return
	}
	// a's guest holds 192.168.100.10 until granted+lease: b must not get it.
	create(t, newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "b"},
		"b refused (a's guest holds a "+lease.String()+" lease granted "+clk.now().Sub(granted).String()+" ago)",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0b": ""}, v1alpha1.StatePending))
}

// Review 12 (R2): longerLeasesUntil counts from the controller's rebuild
// ("now"), assuming the agent applied the lowering no later. An agent whose
// watch lags (apiserver restart, its node cut from the control plane while
// the VM network still works) keeps serving the old lease time after that
// and grants a day-long lease ending after longerLeasesUntil; the
// address is then given to another MAC while the guest still holds it.
// Fix: count longerLeasesUntil from when the agent confirms the new lease
// time (e.g. the agent pod records the pool generation it serves), not from
// the controller's rebuild.
func TestLongerLeasesUntilCoversLaggingAgent(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "ns/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "10.0.0.1", CIDR: "10.0.0.0/24", LeaseTime: ptr.To(86400),
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
	am := build()
	const a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
	g, err := am.AllocateFor(a, "uid-a")
	if err != nil {
		t.Fatal(err)
	}
	fillIPv4(pool, am)
	old := pool.DeepCopy() // the agent's (lagging) view

	pool.Spec.IPv4Config.LeaseTime = ptr.To(60)
	fillIPv4(pool, build()) // the controller's rebuild after the lowering
	// The agent sees the lowering 10 minutes later; just before, it
	// renews a's lease under the old lease time.
	clk.add(10 * time.Minute)
	served, err := poolwatch.FromIPPool(old)
	if err != nil {
		t.Fatal(err)
	}
	leaseEnd := clk.now().Add(served.LeaseTime)
	clk.add(10 * time.Minute)
	am = build()
	if _, err := am.ReleaseFor(a, "uid-a"); err != nil {
		t.Fatal(err)
	}
	fillIPv4(pool, am)
	// Just before a's lease ends, b asks for a's address.
	clk.t = leaseEnd.Add(-time.Minute)
	err = build().AllocateIPFor(g.IP, b, "uid-b")
	if !errors.Is(err, ipam.ErrQuarantined) {
		t.Fatalf("b asked for %s a minute before a's lease on it ends (%s): got %v, want ErrQuarantined (longerLeasesUntil %v)",
			g.IP, leaseEnd.Format(time.RFC3339), err, pool.Status.IPv4.LongerLeasesUntil)
	}
}
