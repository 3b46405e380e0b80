package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func newVMNetCfg(ns, name string, ncs ...v1alpha1.NetworkConfig) *v1alpha1.VirtualMachineNetworkConfig {
	return &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.VirtualMachineNetworkConfigSpec{VMName: name, NetworkConfigs: ncs},
	}
}

func nic(network, mac string, ip ...string) v1alpha1.NetworkConfig {
	nc := v1alpha1.NetworkConfig{NetworkName: network, MACAddress: mac}
	if len(ip) > 0 {
		nc.IPAddress = ptr.To(v1alpha1.IPv4Address(ip[0]))
	}
	return nc
}

// waitVMNetCfg waits until check accepts the object.
func waitVMNetCfg(t testing.TB, key types.NamespacedName, what string, check func(*v1alpha1.VirtualMachineNetworkConfig) error) *v1alpha1.VirtualMachineNetworkConfig {
	t.Helper()
	var v *v1alpha1.VirtualMachineNetworkConfig
	eventually(t, 20*time.Second, what, func() error {
		v = &v1alpha1.VirtualMachineNetworkConfig{}
		if err := k8s.Get(context.Background(), key, v); err != nil {
			return err
		}
		return check(v)
	})
	return v
}

// allocatedIs checks the Allocated condition and the per-NIC states and addresses (mac -> ip, "" for none).
func allocatedIs(status corev1.ConditionStatus, reason string, want map[string]string, state v1alpha1.NetworkConfigState) func(*v1alpha1.VirtualMachineNetworkConfig) error {
	return func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		c := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("Allocated = %s (%v)", condition(v.Status.Conditions, v1alpha1.Allocated), c)
		}
		if len(v.Status.NetworkConfigs) != len(want) {
			return fmt.Errorf("status has %d NICs, want %d: %+v", len(v.Status.NetworkConfigs), len(want), v.Status.NetworkConfigs)
		}
		for _, st := range v.Status.NetworkConfigs {
			ip, ok := want[st.MACAddress]
			if !ok || st.AllocatedIPAddress != ip || st.State != state {
				return fmt.Errorf("NIC %+v, want ip %q state %s", st, ip, state)
			}
		}
		return nil
	}
}

func poolAllocated(t testing.TB, key types.NamespacedName) map[string]string {
	t.Helper()
	p := getPool(t, key)
	out := map[string]string{}
	if p.Status.IPv4 == nil {
		return out
	}
	for ip, mac := range p.Status.IPv4.Allocated {
		if mac != v1alpha1.AllocatedExcluded && mac != v1alpha1.AllocatedReserved {
			out[ip] = mac
		}
	}
	return out
}

func waitPoolAllocated(t testing.TB, key types.NamespacedName, want map[string]string) {
	t.Helper()
	eventually(t, 20*time.Second, "pool allocations", func() error {
		got := poolAllocated(t, key)
		if !mapsEqual(got, want) {
			return fmt.Errorf("allocated %v, want %v", got, want)
		}
		p := getPool(t, key)
		if p.Status.IPv4.Used != len(want) {
			return fmt.Errorf("used %d, want %d", p.Status.IPv4.Used, len(want))
		}
		return nil
	})
}

func TestVMNetCfgAllocation(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.13", "192.168.100.11")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)

	// Lowest free; MACs normalized in the pool.
	a := newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0A"))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0A": "192.168.100.10"}, v1alpha1.StateAllocated))
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.10": "02:00:00:00:00:0a"})

	// Requested address.
	b := newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.13"))
	create(t, b)
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0b": "192.168.100.13"}, v1alpha1.StateAllocated))

	// Requested address taken: clear reason, event, nothing taken.
	c := newVMNetCfg(ns, "c", nic(net, "02:00:00:00:00:0c", "192.168.100.13"))
	create(t, c)
	waitVMNetCfg(t, client.ObjectKeyFromObject(c), "c refused",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0c": ""}, v1alpha1.StatePending))
	eventually(t, 10*time.Second, "address-taken event", func() error { return hasEvent(ns, "c", ReasonAddressTaken, "192.168.100.13") })
	// c would take .13 as soon as it is free; drop it so the later steps
	// know who gets a released address.
	if err := k8s.Delete(ctx, getVNC(t, client.ObjectKeyFromObject(c))); err != nil {
		t.Fatal(err)
	}
	// Requested an excluded address: refused too.
	d := newVMNetCfg(ns, "d", nic(net, "02:00:00:00:00:0d", "192.168.100.11"))
	create(t, d)
	waitVMNetCfg(t, client.ObjectKeyFromObject(d), "d refused",
		allocatedIs(corev1.ConditionFalse, ReasonAddressTaken, map[string]string{"02:00:00:00:00:0d": ""}, v1alpha1.StatePending))
	// Move d to "any": gets .12, the last free one.
	patchSpec(t, client.ObjectKeyFromObject(d), func(v *v1alpha1.VirtualMachineNetworkConfig) {
		v.Spec.NetworkConfigs[0].IPAddress = nil
	})
	waitVMNetCfg(t, client.ObjectKeyFromObject(d), "d allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0d": "192.168.100.12"}, v1alpha1.StateAllocated))
	// Exhausted.
	e := newVMNetCfg(ns, "e", nic(net, "02:00:00:00:00:0e"))
	create(t, e)
	waitVMNetCfg(t, client.ObjectKeyFromObject(e), "e exhausted",
		allocatedIs(corev1.ConditionFalse, ReasonPoolExhausted, map[string]string{"02:00:00:00:00:0e": ""}, v1alpha1.StatePending))
	eventually(t, 10*time.Second, "exhausted event", func() error { return hasEvent(ns, "e", ReasonPoolExhausted, "") })
	// No hot loop: e's resourceVersion settles.
	rv := getVNC(t, client.ObjectKeyFromObject(e)).ResourceVersion
	time.Sleep(1500 * time.Millisecond)
	if now := getVNC(t, client.ObjectKeyFromObject(e)).ResourceVersion; now != rv {
		t.Errorf("exhausted vmnetcfg keeps being written: %s -> %s", rv, now)
	}

	// Deleting a frees its address; e, waiting, gets it (woken by the pool).
	if err := k8s.Delete(ctx, getVNC(t, client.ObjectKeyFromObject(a))); err != nil {
		t.Fatal(err)
	}
	waitVMNetCfg(t, client.ObjectKeyFromObject(e), "e allocated after a's release",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0e": "192.168.100.10"}, v1alpha1.StateAllocated))
	eventually(t, 10*time.Second, "a gone", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &v1alpha1.VirtualMachineNetworkConfig{}); !isNotFound(err) {
			return fmt.Errorf("a still there: %v", err)
		}
		return nil
	})
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.10": "02:00:00:00:00:0e", "192.168.100.12": "02:00:00:00:00:0d", "192.168.100.13": "02:00:00:00:00:0b"})

	// Paused vmnetcfg: Pending, address kept for its MAC; unpause: same address.
	patchSpec(t, client.ObjectKeyFromObject(b), func(v *v1alpha1.VirtualMachineNetworkConfig) { v.Spec.Paused = ptr.To(true) })
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b pending", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if condition(v.Status.Conditions, v1alpha1.Disabled) != "True/"+ReasonVMNetCfgPaused {
			return fmt.Errorf("Disabled = %s", condition(v.Status.Conditions, v1alpha1.Disabled))
		}
		if st := v.Status.NetworkConfigs; len(st) != 1 || st[0].State != v1alpha1.StatePending || st[0].AllocatedIPAddress != "192.168.100.13" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	patchSpec(t, client.ObjectKeyFromObject(b), func(v *v1alpha1.VirtualMachineNetworkConfig) { v.Spec.Paused = nil })
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b back",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0b": "192.168.100.13"}, v1alpha1.StateAllocated))

	// Paused pool: a new NIC waits (Pending, reason), existing ones keep theirs.
	setPaused(t, pk, true)
	f := newVMNetCfg(ns, "f", nic(net, "02:00:00:00:00:0f"))
	create(t, f)
	waitVMNetCfg(t, client.ObjectKeyFromObject(f), "f waits on paused pool",
		allocatedIs(corev1.ConditionFalse, ReasonPoolPaused, map[string]string{"02:00:00:00:00:0f": ""}, v1alpha1.StatePending))
	// NIC removed from b's spec while d gets a second NIC on an unmanaged network.
	setPaused(t, pk, false)
	patchSpec(t, client.ObjectKeyFromObject(d), func(v *v1alpha1.VirtualMachineNetworkConfig) {
		v.Spec.NetworkConfigs = append(v.Spec.NetworkConfigs, nic(ns+"/nopool", "02:00:00:00:01:0d"))
	})
	waitVMNetCfg(t, client.ObjectKeyFromObject(d), "d second NIC without pool",
		func(v *v1alpha1.VirtualMachineNetworkConfig) error {
			if condition(v.Status.Conditions, v1alpha1.Allocated) != "False/"+ReasonNoIPPool || len(v.Status.NetworkConfigs) != 2 {
				return fmt.Errorf("Allocated = %s, %+v", condition(v.Status.Conditions, v1alpha1.Allocated), v.Status.NetworkConfigs)
			}
			return nil
		})
	patchSpec(t, client.ObjectKeyFromObject(b), func(v *v1alpha1.VirtualMachineNetworkConfig) { v.Spec.NetworkConfigs = nil })
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b NIC dropped", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if len(v.Status.NetworkConfigs) != 0 {
			return fmt.Errorf("status %+v", v.Status.NetworkConfigs)
		}
		return nil
	})
	// f (unpaused pool) takes what b released.
	waitVMNetCfg(t, client.ObjectKeyFromObject(f), "f allocated after unpause",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0f": "192.168.100.13"}, v1alpha1.StateAllocated))
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.10": "02:00:00:00:00:0e", "192.168.100.12": "02:00:00:00:00:0d", "192.168.100.13": "02:00:00:00:00:0f"})

	// Metrics of a NIC.
	eventually(t, 10*time.Second, "vmnetcfg metric", func() error {
		if v := gaugeValue(ctl.metrics.VMNetCfg, ns+"/f", net, "02:00:00:00:00:0f", "192.168.100.13", "Allocated"); v != 1 {
			return fmt.Errorf("gauge %v", v)
		}
		return nil
	})
	// Debug endpoints show the same as the status.
	checkDebugEndpoints(t, ctl.store, pk, map[string]string{"192.168.100.10": "02:00:00:00:00:0e", "192.168.100.12": "02:00:00:00:00:0d", "192.168.100.13": "02:00:00:00:00:0f"})
}

func getVNC(t testing.TB, key types.NamespacedName) *v1alpha1.VirtualMachineNetworkConfig {
	t.Helper()
	v := &v1alpha1.VirtualMachineNetworkConfig{}
	if err := k8s.Get(context.Background(), key, v); err != nil {
		t.Fatal(err)
	}
	return v
}

func patchSpec(t testing.TB, key types.NamespacedName, edit func(*v1alpha1.VirtualMachineNetworkConfig)) {
	t.Helper()
	for range 10 {
		v := getVNC(t, key)
		edit(v)
		err := k8s.Update(context.Background(), v)
		if err == nil {
			return
		}
		if !isConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatalf("update %s: too many conflicts", key)
}
