package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// listHook is an uncached reader that runs after(list) once each List has
// returned: it places other events between the sweep's reads.
type listHook struct {
	client.Reader
	after func(client.ObjectList)
}

func (h listHook) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := h.Reader.List(ctx, list, opts...); err != nil {
		return err
	}
	h.after(list)
	return nil
}

func deleteAndWait(t testing.TB, obj client.Object) {
	t.Helper()
	if err := k8s.Delete(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, obj.GetName()+" gone", func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.VirtualMachineNetworkConfig{})
		if !isNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// Issue 12 item 1: VMNetCfg a (MAC m) is deleted between the sweep's two
// reads, b with the same MAC is created after the list and gets the same
// address: the queued sweep must not free b's allocation.
func TestSweepSparesSameMACRecreated(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{sweep: time.Hour}) // the test runs the sweep itself
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	const mac = "02:00:00:00:00:0a"
	a := newVMNetCfg(ns, "a", nic(net, mac))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{mac: "192.168.100.10"}, v1alpha1.StateAllocated))

	b := newVMNetCfg(ns, "b", nic(net, mac))
	reader := listHook{Reader: k8s, after: func(l client.ObjectList) {
		switch l.(type) {
		case *v1alpha1.IPPoolList: // between the two reads: a goes
			deleteAndWait(t, a)
		case *v1alpha1.VirtualMachineNetworkConfigList: // after the list: b comes
			create(t, b)
			waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b allocated",
				allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{mac: "192.168.100.10"}, v1alpha1.StateAllocated))
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
	if got := poolAllocated(t, pk); got["192.168.100.10"] != mac {
		t.Fatalf("b's allocation was freed by the sweep: pool records %v while b shows 192.168.100.10", got)
	}
}

// Issue 12 item 1, the finalizer: a VMNetCfg being deleted releases only
// the allocation made for it, not one its MAC holds for another VMNetCfg.
func TestFinalizerSparesOtherOwner(t *testing.T) {
	startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	const mac = "02:00:00:00:00:0a"
	a := newVMNetCfg(ns, "a", nic(net, mac))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{mac: "192.168.100.10"}, v1alpha1.StateAllocated))
	// b lists the same MAC (a VM restored while the old object still exists).
	b := newVMNetCfg(ns, "b", nic(net, mac))
	create(t, b)
	eventually(t, 20*time.Second, "b reconciled", func() error {
		if c := v1alpha1.FindCondition(getVNC(t, client.ObjectKeyFromObject(b)).Status.Conditions, v1alpha1.Allocated); c == nil {
			return errors.New("no Allocated condition yet")
		}
		return nil
	})
	deleteAndWait(t, a)
	// Whatever b was told meanwhile, in the end it shows an address its
	// pool records for its MAC: never one the pool considers free.
	eventually(t, 20*time.Second, "b allocated, and recorded in the pool", func() error {
		v := getVNC(t, client.ObjectKeyFromObject(b))
		if !v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated) || len(v.Status.NetworkConfigs) != 1 {
			return fmt.Errorf("b: %s %+v", condition(v.Status.Conditions, v1alpha1.Allocated), v.Status.NetworkConfigs)
		}
		ip := v.Status.NetworkConfigs[0].AllocatedIPAddress
		if got := poolAllocated(t, pk); got[ip] != mac {
			return fmt.Errorf("b shows %s, the pool records %v", ip, got)
		}
		return nil
	})
}

// Issue 12 item 3: a released address does not go to another MAC within
// the lease time, also after a controller restart; its own MAC gets it
// back; when nothing else is free it is given, with an event.
func TestReleasedAddressQuarantined(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.13")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(3600)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	alloc := func(name, mac, want string) {
		t.Helper()
		create(t, newVMNetCfg(ns, name, nic(net, mac)))
		waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: name}, name+" allocated",
			allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{mac: want}, v1alpha1.StateAllocated))
	}
	alloc("a", "02:00:00:00:00:0a", "192.168.100.10")
	alloc("b", "02:00:00:00:00:0b", "192.168.100.11")
	deleteAndWait(t, getVNC(t, types.NamespacedName{Namespace: ns, Name: "a"}))
	alloc("c", "02:00:00:00:00:0c", "192.168.100.12")

	// A new controller (restart, or another leader) knows of the quarantine.
	ctl.stop()
	startController(t, managerOpts{sweep: time.Hour})
	alloc("d", "02:00:00:00:00:0d", "192.168.100.13")
	// The MAC that released it gets it back.
	alloc("a2", "02:00:00:00:00:0a", "192.168.100.10")
	deleteAndWait(t, getVNC(t, types.NamespacedName{Namespace: ns, Name: "a2"}))
	// Nothing else is free: it is given early, and the event says so.
	alloc("e", "02:00:00:00:00:0e", "192.168.100.10")
	eventually(t, 10*time.Second, "early-reuse event", func() error {
		return hasEvent(ns, "e", "RecentlyReleasedAddressReused", "192.168.100.10")
	})
}

// Issue 12 item 4: a spec change while the pool is paused drops an
// allocation; the VMNetCfg must not keep showing it, the pool and the
// VMNetCfg say so, and it gets a new address on unpause.
func TestDroppedAllocationIsReported(t *testing.T) {
	startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	for i, name := range []string{"a", "b"} {
		create(t, newVMNetCfg(ns, name, nic(net, fmt.Sprintf("02:00:00:00:00:0%d", i+1))))
		waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: name}, name+" allocated",
			allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{fmt.Sprintf("02:00:00:00:00:0%d", i+1): fmt.Sprintf("192.168.100.1%d", i)}, v1alpha1.StateAllocated))
	}
	setPaused(t, pk, true)
	waitPoolCondition(t, pk, v1alpha1.Stopped, corev1.ConditionTrue)
	eventually(t, 10*time.Second, "exclude .10", func() error {
		p := getPool(t, pk)
		p.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"192.168.100.10"}
		return k8s.Update(context.Background(), p)
	})
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a no longer shows the dropped address",
		allocatedIs(corev1.ConditionFalse, "AllocationDropped", map[string]string{"02:00:00:00:00:01": ""}, v1alpha1.StatePending))
	p := waitPoolCondition(t, pk, "AllocationsDropped", corev1.ConditionTrue)
	if c := v1alpha1.FindCondition(p.Status.Conditions, "AllocationsDropped"); c == nil || !strings.Contains(c.Message, "192.168.100.10=02:00:00:00:00:01") {
		t.Errorf("pool condition %+v does not name the dropped allocation", c)
	}
	eventually(t, 10*time.Second, "pool event", func() error { return hasEvent(ns, "pool", "AllocationDropped", "192.168.100.10") })
	eventually(t, 10*time.Second, "vmnetcfg event", func() error { return hasEvent(ns, "a", "AllocationDropped", "192.168.100.10") })

	setPaused(t, pk, false)
	waitVMNetCfg(t, ak, "a allocated again",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:01": "192.168.100.12"}, v1alpha1.StateAllocated))
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.11": "02:00:00:00:00:02", "192.168.100.12": "02:00:00:00:00:01"})
}

// The same drop on a running pool (e.g. a Harvester status with an entry
// the spec excludes): the VMNetCfg is woken and allocated again at once.
func TestDroppedAllocationOnRunningPoolIsReallocated(t *testing.T) {
	startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	create(t, newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:01")))
	ak := types.NamespacedName{Namespace: ns, Name: "a"}
	waitVMNetCfg(t, ak, "a allocated",
		allocatedIs(corev1.ConditionTrue, "Allocated", map[string]string{"02:00:00:00:00:01": "192.168.100.10"}, v1alpha1.StateAllocated))
	eventually(t, 10*time.Second, "exclude .10", func() error {
		p := getPool(t, pk)
		p.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"192.168.100.10"}
		return k8s.Update(context.Background(), p)
	})
	waitVMNetCfg(t, ak, "a reallocated",
		allocatedIs(corev1.ConditionTrue, "Reallocated", map[string]string{"02:00:00:00:00:01": "192.168.100.11"}, v1alpha1.StateAllocated))
	eventually(t, 10*time.Second, "vmnetcfg event", func() error { return hasEvent(ns, "a", "AllocationDropped", "192.168.100.11") })
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.11": "02:00:00:00:00:01"})
}

// Issue 12 item 9: Do must not wait forever when the pool's goroutine
// stops (Forget) while the op is being queued. The hook forgets the pool
// and waits until its goroutine is gone before Do queues: the send into the
// buffered channel and the closed done channel are then both ready, and the
// select picks one at random, so several rounds make the send win.
func TestDoAfterForgetReturns(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	store := ctl.store
	store.testHookQueue = func(ps *poolState) {
		store.Forget(ps.key)
		<-ps.done
	}
	defer func() { store.testHookQueue = nil }()
	for i := range 40 {
		// The deadline only turns a hang into a failure.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := store.Do(ctx, pk, func(*v1alpha1.IPPool, *ipam.Pool) error { return nil })
		cancel()
		if !errors.Is(err, ErrPoolGone) {
			t.Fatalf("round %d: Do after Forget = %v, want ErrPoolGone (a finalizer would hang)", i, err)
		}
	}
}

// Issue 12 item 11: the pool gauges follow allocations, not only IPPool
// reconciles.
func TestPoolMetricsFollowAllocations(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.AgentReady, corev1.ConditionFalse)
	labels := []string{pk.String(), "192.168.100.0/24", net}
	eventually(t, 10*time.Second, "gauges of the empty pool", func() error {
		if u, a := gaugeValue(ctl.metrics.PoolUsed, labels...), gaugeValue(ctl.metrics.PoolAvailable, labels...); u != 0 || a != 11 {
			return fmt.Errorf("used %v available %v", u, a)
		}
		return nil
	})
	for i := range 3 {
		mac := fmt.Sprintf("02:00:00:00:00:0%d", i)
		create(t, newVMNetCfg(ns, fmt.Sprintf("v%d", i), nic(net, mac)))
	}
	eventually(t, 10*time.Second, "gauges after 3 allocations", func() error {
		if u, a := gaugeValue(ctl.metrics.PoolUsed, labels...), gaugeValue(ctl.metrics.PoolAvailable, labels...); u != 3 || a != 8 {
			return fmt.Errorf("used %v available %v", u, a)
		}
		return nil
	})
}
