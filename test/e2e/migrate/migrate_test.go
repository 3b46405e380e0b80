package migrate

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/localcluster"
)

func TestMigrationFromHarvestersAddon(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	c := cluster.Client()

	// Our agents replace Harvester's: one ready pod per pool in our namespace.
	for _, p := range pools {
		pod, err := cluster.AgentPod(ctx, "default", p.name, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if pod.Namespace == harvesterNS || pod.Labels[harvesterAgentLabel] != "" {
			t.Fatalf("agent of %s is %s/%s with labels %v, not ours", p.name, pod.Namespace, pod.Name, pod.Labels)
		}
		eventually(t, 30*time.Second, "agentPodRef of "+p.name+" names our agent", func() error {
			var pool v1alpha1.IPPool
			if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: p.name}, &pool); err != nil {
				return err
			}
			if r := pool.Status.AgentPodRef; r == nil || r.Namespace != pod.Namespace || r.Name != pod.Name || r.UID != pod.UID {
				return fmt.Errorf("agentPodRef %+v", r)
			}
			return nil
		})
	}

	t.Run("every MAC keeps its address in the statuses", func(t *testing.T) {
		for _, p := range pools {
			eventually(t, 30*time.Second, "allocations of "+p.name, func() error {
				var pool v1alpha1.IPPool
				if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: p.name}, &pool); err != nil {
					return err
				}
				if pool.Status.IPv4 == nil {
					return fmt.Errorf("no status.ipv4")
				}
				got := pool.Status.IPv4.Allocated
				for ip, mac := range p.allocated {
					if got[ip] != mac {
						return fmt.Errorf("%s is %q, was %s: %v", ip, got[ip], mac, got)
					}
				}
				for _, ip := range p.exclude {
					if got[ip] != v1alpha1.AllocatedExcluded {
						return fmt.Errorf("excluded %s is %q: %v", ip, got[ip], got)
					}
				}
				for _, ip := range p.reserved {
					if got[ip] != v1alpha1.AllocatedReserved {
						return fmt.Errorf("reserved %s is %q: %v", ip, got[ip], got)
					}
				}
				if pool.Status.IPv4.Used != len(p.allocated) {
					return fmt.Errorf("used %d, want %d", pool.Status.IPv4.Used, len(p.allocated))
				}
				if !v1alpha1.IsConditionTrue(pool.Status.Conditions, v1alpha1.AgentReady) {
					return fmt.Errorf("AgentReady is not True: %+v", pool.Status.Conditions)
				}
				return nil
			})
		}
		for _, v := range vms {
			eventually(t, 30*time.Second, "VMNetCfg of "+v.name, func() error {
				var vnc v1alpha1.VirtualMachineNetworkConfig
				if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: v.name}, &vnc); err != nil {
					return err
				}
				if !v1alpha1.IsConditionTrue(vnc.Status.Conditions, v1alpha1.Allocated) {
					return fmt.Errorf("Allocated not True: %+v", vnc.Status.Conditions)
				}
				for _, n := range v.nics {
					found := false
					for _, st := range vnc.Status.NetworkConfigs {
						if strings.EqualFold(st.MACAddress, n.mac) && st.AllocatedIPAddress == n.ip && st.State == v1alpha1.StateAllocated {
							found = true
						}
					}
					if !found {
						return fmt.Errorf("%s: %s not Allocated to %s: %+v", v.name, n.ip, n.mac, vnc.Status.NetworkConfigs)
					}
				}
				return nil
			})
		}
	})

	// The guests: every NIC of every migrated VM asks our agents on the wire.
	guests := map[string]*localcluster.VM{}
	for _, v := range vms {
		g, err := cluster.StartVM(ctx, v.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Stop() })
		guests[v.name] = g
		for i, n := range v.nics {
			if err := g.AddNIC(ctx, fmt.Sprintf("eth%d", i), n.mac, network(n.network)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("existing VMs get their addresses from our agents", func(t *testing.T) {
		for _, v := range vms {
			for i, n := range v.nics {
				lease := dhcp(t, guests[v.name], fmt.Sprintf("eth%d", i))
				if lease.IP != n.ip {
					t.Errorf("%s %s got %s on the wire, Harvester had given %s", v.name, n.mac, lease.IP, n.ip)
				}
				p := poolOf(n.network)
				if lease.ServerID != p.server || lease.LeaseTime != int(p.leaseTime) {
					t.Errorf("%s %s: lease %s, want server %s and lease time %d", v.name, n.mac, lease, p.server, p.leaseTime)
				}
			}
		}
	})

	t.Run("a new VM gets a free address", func(t *testing.T) {
		const mac = "52:54:00:aa:03:01"
		vm := &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm3"},
			Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{Spec: kubevirtv1.VirtualMachineInstanceSpec{
				Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{Interfaces: []kubevirtv1.Interface{{Name: "nic-1", MacAddress: mac,
					InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Bridge: &kubevirtv1.InterfaceBridge{}}}}}},
				Networks: []kubevirtv1.Network{{Name: "nic-1", NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: "vlan100"}}}},
			}}}}
		if err := c.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		g, err := cluster.StartVM(ctx, "vm3")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Stop() })
		if err := g.AddNIC(ctx, "eth0", mac, "default/vlan100"); err != nil {
			t.Fatal(err)
		}
		lease := dhcp(t, g, "eth0")
		// The lowest free address: .100 (.105 and .120 are Harvester's).
		if lease.IP != "192.168.50.100" {
			t.Fatalf("vm3 got %s, want 192.168.50.100", lease.IP)
		}
	})

	t.Run("the installed chart refuses deleting a pool in use", func(t *testing.T) {
		pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pool-net200"}}
		out, err := cluster.Kubectl(ctx, "delete", "ippool", "-n", "default", pool.Name, "--wait=false")
		if err == nil || !strings.Contains(out, "is still used by VirtualMachineNetworkConfig default/vm1") {
			t.Fatalf("kubectl delete of a pool in use: %v\n%s", err, out)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil || !pool.DeletionTimestamp.IsZero() {
			t.Fatalf("the pool in use is gone or being deleted: %v %v", err, pool.DeletionTimestamp)
		}
	})

	t.Run("deleting a migrated VMNetCfg and then its pool completes", func(t *testing.T) {
		// vm1 (on both pools): deleting the VM removes its VMNetCfg (our
		// controller does, there is no garbage collector here), whose
		// finalizers include Harvester's.
		if err := c.Delete(ctx, &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm1"}}); err != nil {
			t.Fatal(err)
		}
		gone(t, &v1alpha1.VirtualMachineNetworkConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm1"}})
		eventually(t, 30*time.Second, "vm1's addresses released", func() error {
			var pool v1alpha1.IPPool
			if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "pool-net200"}, &pool); err != nil {
				return err
			}
			if mac := pool.Status.IPv4.Allocated["10.200.0.33"]; mac != "" {
				return fmt.Errorf("10.200.0.33 still allocated to %s", mac)
			}
			return nil
		})
		if out, err := cluster.Kubectl(ctx, "delete", "ippool", "-n", "default", "pool-net200", "--wait=false"); err != nil {
			t.Fatalf("kubectl delete ippool pool-net200: %v\n%s", err, out)
		}
		gone(t, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pool-net200"}})
		eventually(t, 60*time.Second, "the agent of the deleted pool is gone", func() error {
			var pods corev1.PodList
			if err := c.List(ctx, &pods, client.InNamespace(cluster.Namespace()), client.MatchingLabels{labelIPPoolName: "pool-net200"}); err != nil {
				return err
			}
			if len(pods.Items) > 0 {
				return fmt.Errorf("%d pods left", len(pods.Items))
			}
			return nil
		})
		// vm2 keeps being served by the other pool.
		if got := dhcp(t, guests["vm2"], "eth0").IP; got != "192.168.50.105" {
			t.Fatalf("vm2 got %s after the other deletions, want 192.168.50.105", got)
		}
	})
}

// network is a NIC's network as namespace/name (bare names are in the VM's
// namespace, default here).
func network(n string) string {
	if strings.Contains(n, "/") {
		return n
	}
	return "default/" + n
}

func poolOf(n string) harvesterPool {
	for _, p := range pools {
		if network(p.network) == network(n) {
			return p
		}
	}
	panic("no pool for " + n)
}

func dhcp(t *testing.T, vm *localcluster.VM, iface string) *localcluster.Lease {
	t.Helper()
	var lease *localcluster.Lease
	eventually(t, 60*time.Second, "DHCP lease on "+vm.Name+" "+iface, func() error {
		var err error
		lease, err = vm.DHCP(context.Background(), iface, 4*time.Second)
		return err
	})
	t.Logf("%s %s got %s", vm.Name, iface, lease)
	return lease
}

// gone waits until obj is deleted for good (no finalizer left hanging).
func gone(t *testing.T, obj client.Object) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%T %s deleted", obj, obj.GetName()), func() error {
		err := cluster.Client().Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v, deletionTimestamp %v): %v", obj.GetFinalizers(), obj.GetDeletionTimestamp(), err)
	})
}
