package controller

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func withIPv6(p *v1alpha1.IPPool, start, end string, exclude ...v1alpha1.IPv6Address) *v1alpha1.IPPool {
	p.Spec.IPv6Config = &v1alpha1.IPv6Config{CIDR: "fd00:100::/64", ServerIP: "fd00:100::2",
		Pool: v1alpha1.IPv6Pool{Start: v1alpha1.IPv6Address(start), End: v1alpha1.IPv6Address(end), Exclude: exclude}}
	return p
}

func nic6(network, mac, ip6 string) v1alpha1.NetworkConfig {
	nc := v1alpha1.NetworkConfig{NetworkName: network, MACAddress: mac}
	if ip6 != "" {
		nc.IPv6Address = ptr.To(v1alpha1.IPv6Address(ip6))
	}
	return nc
}

// nicIs checks one NIC's two addresses in a VMNetCfg's status.
func nicIs(mac, ip, ip6 string, state v1alpha1.NetworkConfigState) func(*v1alpha1.VirtualMachineNetworkConfig) error {
	return func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		for _, st := range v.Status.NetworkConfigs {
			if st.MACAddress == mac {
				if st.AllocatedIPAddress != ip || st.AllocatedIPv6Address != ip6 || st.State != state {
					return fmt.Errorf("NIC %+v, want %q %q %s", st, ip, ip6, state)
				}
				return nil
			}
		}
		return fmt.Errorf("no NIC %s in %+v", mac, v.Status.NetworkConfigs)
	}
}

func poolAllocated6(t testing.TB, key types.NamespacedName) map[string]string {
	t.Helper()
	p := getPool(t, key)
	out := map[string]string{}
	if p.Status.IPv6 == nil {
		return out
	}
	for ip, mac := range p.Status.IPv6.Allocated {
		if mac != v1alpha1.AllocatedExcluded && mac != v1alpha1.AllocatedReserved {
			out[ip] = mac
		}
	}
	return out
}

func TestVMNetCfgDualStack(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := withIPv6(newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20"), "fd00:100::10", "fd00:100::13", "fd00:100::11")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)

	// One address per family, lowest free, skipping the IPv6 exclude.
	a := newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a"))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a has both addresses", nicIs("02:00:00:00:00:0a", "192.168.100.10", "fd00:100::10", v1alpha1.StateAllocated))
	b := newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b"))
	create(t, b)
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b skips the excluded ::11", nicIs("02:00:00:00:00:0b", "192.168.100.11", "fd00:100::12", v1alpha1.StateAllocated))
	p := getPool(t, pk)
	if p.Status.IPv6 == nil || p.Status.IPv6.Used != 2 || p.Status.IPv6.Available != 1 ||
		p.Status.IPv6.Allocated["fd00:100::11"] != v1alpha1.AllocatedExcluded || p.Status.IPv4.Used != 2 {
		t.Fatalf("pool status after two NICs: ipv4 %+v ipv6 %+v", p.Status.IPv4, p.Status.IPv6)
	}

	// A requested IPv6 address, in any spelling.
	c := newVMNetCfg(ns, "c", nic6(net, "02:00:00:00:00:0c", "FD00:100:0::13"))
	create(t, c)
	waitVMNetCfg(t, client.ObjectKeyFromObject(c), "c has its requested address", nicIs("02:00:00:00:00:0c", "192.168.100.12", "fd00:100::13", v1alpha1.StateAllocated))

	// The IPv6 range is full: d keeps its IPv4 address, and the condition says why.
	d := newVMNetCfg(ns, "d", nic(net, "02:00:00:00:00:0d"))
	create(t, d)
	waitVMNetCfg(t, client.ObjectKeyFromObject(d), "d has IPv4 only", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if cd := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated); cd == nil || cd.Reason != ReasonPoolExhausted {
			return fmt.Errorf("Allocated = %+v", cd)
		}
		return nicIs("02:00:00:00:00:0d", "192.168.100.13", "", v1alpha1.StatePending)(v)
	})

	// A requested address that is taken is refused, and nothing is taken for it.
	e := newVMNetCfg(ns, "e", nic6(net, "02:00:00:00:00:0e", "fd00:100::12"))
	create(t, e)
	waitVMNetCfg(t, client.ObjectKeyFromObject(e), "e refused", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if cd := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated); cd == nil || cd.Reason != ReasonAddressTaken {
			return fmt.Errorf("Allocated = %+v", cd)
		}
		return nicIs("02:00:00:00:00:0e", "192.168.100.14", "", v1alpha1.StatePending)(v)
	})

	// Deleting a releases both addresses; d, waiting, then gets the IPv6 one.
	if err := k8s.Delete(ctx, getVNC(t, client.ObjectKeyFromObject(a))); err != nil {
		t.Fatal(err)
	}
	waitVMNetCfg(t, client.ObjectKeyFromObject(d), "d gets a's IPv6 address", nicIs("02:00:00:00:00:0d", "192.168.100.13", "fd00:100::10", v1alpha1.StateAllocated))
	if got := poolAllocated6(t, pk); len(got) != 3 || got["fd00:100::10"] != "02:00:00:00:00:0d" {
		t.Fatalf("status.ipv6 after a left: %v", got)
	}
	if _, held := poolAllocated(t, pk)["192.168.100.10"]; held {
		t.Fatal("a's IPv4 address still recorded after its deletion")
	}

	// A new controller rebuilds both IPAMs from the status (the source of
	// truth): nothing recorded is given twice.
	ctl.stop()
	startController(t, managerOpts{})
	f := newVMNetCfg(ns, "f", nic6(net, "02:00:00:00:00:0f", "fd00:100::12"))
	create(t, f)
	waitVMNetCfg(t, client.ObjectKeyFromObject(f), "f refused after restart", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if cd := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated); cd == nil || cd.Reason != ReasonAddressTaken {
			return fmt.Errorf("Allocated = %+v", cd)
		}
		return nil
	})
	if got := poolAllocated6(t, pk); got["fd00:100::12"] != "02:00:00:00:00:0b" {
		t.Fatalf("status.ipv6 after restart: %v", got)
	}
}

func TestVMNetCfgIPv6Only(t *testing.T) {
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net6", nil)
	net := ns + "/net6"
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "v6"}, Spec: v1alpha1.IPPoolSpec{NetworkName: net}}
	withIPv6(pool, "fd00:100::100", "fd00:100::ffff:ffff:ffff:ffff")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)

	a := newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a"))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a has an IPv6 address only", nicIs("02:00:00:00:00:0a", "", "fd00:100::100", v1alpha1.StateAllocated))
	// Asking an IPv6-only pool for an IPv4 address is refused with a reason.
	b := newVMNetCfg(ns, "b", nic(net, "02:00:00:00:00:0b", "192.168.100.20"))
	create(t, b)
	waitVMNetCfg(t, client.ObjectKeyFromObject(b), "b refused", func(v *v1alpha1.VirtualMachineNetworkConfig) error {
		if cd := v1alpha1.FindCondition(v.Status.Conditions, v1alpha1.Allocated); cd == nil || cd.Reason != ReasonAddressTaken {
			return fmt.Errorf("Allocated = %+v", cd)
		}
		return nil
	})
	p := getPool(t, pk)
	if p.Status.IPv4 != nil {
		t.Fatalf("IPv6-only pool got status.ipv4 %+v", p.Status.IPv4)
	}
	if p.Status.IPv6 == nil || p.Status.IPv6.Allocated["fd00:100::100"] != "02:00:00:00:00:0a" || p.Status.IPv6.Available <= 1<<62 {
		t.Fatalf("status.ipv6 = %+v", p.Status.IPv6)
	}
}
