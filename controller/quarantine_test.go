package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// testClock is a clock the test moves forward, read by the pool store.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// editPool applies edit to the pool's spec (retrying conflicts) and makes
// the store rebuild its IPAM from the new spec before its next operation,
// as the pool's reconcile does when it sees the new generation.
func editPool(t testing.TB, store *PoolStore, key types.NamespacedName, edit func(*v1alpha1.IPPool)) {
	t.Helper()
	var gen int64
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := getPool(t, key)
		edit(p)
		if err := k8s.Update(context.Background(), p); err != nil {
			return err
		}
		gen = p.Generation
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	store.Refresh(key, gen)
}

// Review of issue 12 (B1): the pool's lease time lowered from a day to a
// minute after a VM released its address. The guest got a one-day lease
// and still uses the address: a minute later, no other VM may get it,
// neither by asking for it nor as the lowest free address.
func TestQuarantineSurvivesLeaseTimeLowered(t *testing.T) {
	clk := &testClock{t: time.Now()}
	ctl := startController(t, managerOpts{sweep: time.Hour, now: clk.now})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.11")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(86400)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	create(t, newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a")))
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0a": "192.168.100.10"}, v1alpha1.StateAllocated))
	deleteAndWait(t, getVNC(t, ak))

	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(60) })
	clk.add(61 * time.Second)
	// b asks for a's old address: refused, it is quarantined for a day.
	create(t, newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "b"}, "b refused",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0b": ""}, v1alpha1.StatePending))
	// c takes any address: not a's.
	create(t, newVMNetCfg(ns, "c", nic(net, "02:00:00:00:00:0c")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "c"}, "c allocated the other address",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0c": "192.168.100.11"}, v1alpha1.StateAllocated))
	// The status says until when, so a restarted controller honours it.
	p := getPool(t, pk)
	r, ok := p.Status.IPv4.Released["192.168.100.10"]
	if !ok || r.Lease == nil || *r.Lease < 86400 {
		t.Fatalf("released entry %+v: want it to record the day-long lease", r)
	}
}

// Review of issue 12 (B2): an address excluded while the pool is paused
// drops its allocation, but the guest still holds its lease on it. When the
// exclude is removed again within the lease time, another VM must not get
// it.
func TestDroppedAllocationStaysQuarantined(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.12")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(3600)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	const macA = "02:00:00:00:00:0a"
	create(t, newVMNetCfg(ns, "a", nic(net, macA)))
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{macA: "192.168.100.10"}, v1alpha1.StateAllocated))

	setPaused(t, pk, true)
	waitPoolCondition(t, pk, v1alpha1.Stopped, corev1.ConditionTrue)
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) {
		p.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"192.168.100.10"}
	})
	waitVMNetCfg(t, ak, "a's allocation dropped",
		allocatedIs(corev1.ConditionFalse, "AllocationDropped", map[string]string{macA: ""}, v1alpha1.StatePending))
	setPaused(t, pk, false)
	waitVMNetCfg(t, ak, "a allocated again",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{macA: "192.168.100.11"}, v1alpha1.StateAllocated))

	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.Pool.Exclude = nil })
	create(t, newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "b"}, "b refused a's old address",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0b": ""}, v1alpha1.StatePending))
	create(t, newVMNetCfg(ns, "c", nic(net, "02:00:00:00:00:0c")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "c"}, "c allocated another address",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0c": "192.168.100.12"}, v1alpha1.StateAllocated))
	// The status records it for a, so a restarted controller honours it.
	if r := getPool(t, pk).Status.IPv4.Released["192.168.100.10"]; r.MAC != macA {
		t.Fatalf("released = %+v, want 192.168.100.10 quarantined for %s", getPool(t, pk).Status.IPv4.Released, macA)
	}
}

// The lease time lowered (here while the controller was down) shortly
// before a VM released its address: the guest's last lease was granted
// under the day-long lease time and may run a day from the change, so its
// address stays quarantined that long, not a minute.
func TestQuarantineAfterLeaseTimeLowered(t *testing.T) {
	clk := &testClock{t: time.Now()}
	ctl := startController(t, managerOpts{sweep: time.Hour, now: clk.now})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.11")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(86400)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	create(t, newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a")))
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0a": "192.168.100.10"}, v1alpha1.StateAllocated))

	ctl.stop()
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(60) })
	startController(t, managerOpts{sweep: time.Hour, now: clk.now})
	clk.add(time.Minute)
	deleteAndWait(t, getVNC(t, ak))
	clk.add(2 * time.Minute)
	create(t, newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.10")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "b"}, "b refused",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0b": ""}, v1alpha1.StatePending))
	create(t, newVMNetCfg(ns, "c", nic(net, "02:00:00:00:00:0c")))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "c"}, "c allocated the other address",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:0c": "192.168.100.11"}, v1alpha1.StateAllocated))
}
