package flow

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/localcluster"
)

const (
	mac1 = "22:37:37:82:93:7d" // examples/vm.yaml
	mac2 = "22:37:37:82:93:7e"
)

var pool = types.NamespacedName{Namespace: "default", Name: "example"}

// TestFlow is the story of the demo, asserted step by step. Each step
// builds on the previous one, so the first failure ends it.
func TestFlow(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	c := cluster.Client()
	examples := filepath.Join(testenv.RepoRoot(), "examples")

	// The README's commands: the examples go in with the real kubectl.
	for _, f := range []string{"nad.yaml", "harvester-ippool.yaml", "vm.yaml"} {
		if out, err := cluster.Kubectl(ctx, "apply", "-f", filepath.Join(examples, f)); err != nil {
			t.Fatalf("kubectl apply -f examples/%s: %v\n%s", f, err, out)
		}
	}
	agent, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent pod %s ready", agent.Name)

	vmObj := &kubevirtv1.VirtualMachine{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "test-vm"}, vmObj); err != nil {
		t.Fatal(err)
	}
	nics := localcluster.VMNICs(vmObj)
	if len(nics) != 1 || nics[0].MAC != mac1 || nics[0].Network != "default/example" {
		t.Fatalf("examples/vm.yaml NICs = %+v, want one NIC %s on default/example", nics, mac1)
	}
	vm, err := cluster.StartVM(ctx, "test-vm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = vm.Stop() })
	if err := vm.AddNIC(ctx, "eth0", mac1, "default/example"); err != nil {
		t.Fatal(err)
	}

	var ip1, ip2 string
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"the client's address equals the VMNetCfg and IPPool status", func(t *testing.T) {
			lease := dhcp(t, vm, "eth0", 60*time.Second)
			ip1 = lease.IP
			assertAllocated(t, mac1, ip1)
			// The rest of the example pool's options reach the client.
			if lease.Router != "192.168.100.1" || strings.Join(lease.DNS, ",") != "1.1.1.1" || lease.Domain != "example.com" ||
				lease.ServerID != "192.168.100.2" || lease.Mask != 24 || lease.LeaseTime != 300 {
				t.Fatalf("lease options %s, want gateway 192.168.100.1, dns 1.1.1.1, domain example.com, /24, 300 s from 192.168.100.2", lease)
			}
		}},
		{"a killed agent is restarted in its pod and serves the same address", func(t *testing.T) {
			pod, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cs := pod.Status.ContainerStatuses
			if len(cs) != 1 {
				t.Fatalf("agent pod has %d container statuses", len(cs))
			}
			pid, err := strconv.Atoi(strings.TrimPrefix(cs[0].ContainerID, "localcluster://"))
			if err != nil {
				t.Fatalf("container ID %q: %v", cs[0].ContainerID, err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill agent pid %d: %v", pid, err)
			}
			eventually(t, 60*time.Second, "agent restarted and ready", func() error {
				p, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, time.Second)
				if err != nil {
					return err
				}
				if p.UID != pod.UID || p.Status.ContainerStatuses[0].RestartCount != cs[0].RestartCount+1 {
					return fmt.Errorf("pod %s restarts %d", p.UID, p.Status.ContainerStatuses[0].RestartCount)
				}
				return nil
			})
			if got := dhcp(t, vm, "eth0", 60*time.Second).IP; got != ip1 {
				t.Fatalf("after the restart NIC 1 got %s, had %s", got, ip1)
			}
		}},
		{"a second NIC gets a second address", func(t *testing.T) {
			updateVM(t, func(vm *kubevirtv1.VirtualMachine) {
				spec := &vm.Spec.Template.Spec
				spec.Domain.Devices.Interfaces = append(spec.Domain.Devices.Interfaces, kubevirtv1.Interface{
					Name: "nic-2", MacAddress: mac2,
					InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Bridge: &kubevirtv1.InterfaceBridge{}}})
				spec.Networks = append(spec.Networks, kubevirtv1.Network{Name: "nic-2",
					NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: "default/example"}}})
			})
			if err := vm.AddNIC(ctx, "eth1", mac2, "default/example"); err != nil {
				t.Fatal(err)
			}
			ip2 = dhcp(t, vm, "eth1", 60*time.Second).IP
			if ip2 == ip1 {
				t.Fatalf("both NICs got %s", ip1)
			}
			assertAllocated(t, mac2, ip2)
			assertAllocated(t, mac1, ip1)
		}},
		{"pausing the pool stops the agent; unpausing restores every address", func(t *testing.T) {
			setPaused(t, true)
			eventually(t, 60*time.Second, "no agent pod while paused", func() error {
				var pods corev1.PodList
				if err := c.List(ctx, &pods, client.InNamespace(cluster.Namespace()), client.MatchingLabels{
					localcluster.AgentLabel: localcluster.AgentLabelValue, "network.harvesterhci.io/ippool-name": pool.Name}); err != nil {
					return err
				}
				if len(pods.Items) > 0 {
					return fmt.Errorf("agent pod %s still exists", pods.Items[0].Name)
				}
				return nil
			})
			if l, err := vm.DHCP(ctx, "eth0", 3*time.Second); err == nil {
				t.Fatalf("paused pool still served %s", l)
			}
			setPaused(t, false)
			if _, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			if got := dhcp(t, vm, "eth0", 60*time.Second).IP; got != ip1 {
				t.Fatalf("after unpausing NIC 1 got %s, had %s", got, ip1)
			}
			if got := dhcp(t, vm, "eth1", 60*time.Second).IP; got != ip2 {
				t.Fatalf("after unpausing NIC 2 got %s, had %s", got, ip2)
			}
			assertAllocated(t, mac1, ip1)
			assertAllocated(t, mac2, ip2)
		}},
		{"removing the second NIC releases its address", func(t *testing.T) {
			updateVM(t, func(vm *kubevirtv1.VirtualMachine) {
				spec := &vm.Spec.Template.Spec
				spec.Domain.Devices.Interfaces = spec.Domain.Devices.Interfaces[:1]
				spec.Networks = spec.Networks[:1]
			})
			assertReleased(t, mac2, ip2)
			assertAllocated(t, mac1, ip1)
			// The agent no longer knows the MAC: a client with it gets nothing.
			eventually(t, 30*time.Second, "agent refuses the removed NIC", func() error {
				if l, err := vm.DHCP(ctx, "eth1", 2*time.Second); err == nil {
					return fmt.Errorf("removed NIC still got %s", l)
				}
				return nil
			})
			if err := vm.RemoveNIC(ctx, "eth1"); err != nil {
				t.Fatal(err)
			}
		}},
		{"editing the pool's CoreDHCP config rolls the agent and the client sees it", func(t *testing.T) {
			before, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			cm := &corev1.ConfigMap{}
			key := types.NamespacedName{Namespace: cluster.Namespace(), Name: controller.AgentConfigMapName(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: pool.Namespace, Name: pool.Name}})}
			if err := c.Get(ctx, key, cm); err != nil {
				t.Fatal(err)
			}
			conf := cm.Data["config.yaml"]
			lines := strings.Split(conf, "\n")
			var edited []string
			for _, l := range lines {
				if strings.Contains(l, "ippool-lease:") {
					indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
					edited = append(edited, indent+"- mtu: 1400")
				}
				edited = append(edited, l)
			}
			if len(edited) == len(lines) {
				t.Fatalf("no ippool-lease plugin line in the agent config:\n%s", conf)
			}
			cm.Data["config.yaml"] = strings.Join(edited, "\n")
			if err := c.Update(ctx, cm); err != nil {
				t.Fatal(err)
			}
			eventually(t, 90*time.Second, "a new agent pod, ready", func() error {
				p, err := cluster.AgentPod(ctx, pool.Namespace, pool.Name, time.Second)
				if err != nil {
					return err
				}
				if p.UID == before.UID {
					return fmt.Errorf("agent pod %s not replaced", p.Name)
				}
				return nil
			})
			eventually(t, 60*time.Second, "the client sees MTU 1400", func() error {
				l, err := vm.DHCP(ctx, "eth0", 5*time.Second)
				if err != nil {
					return err
				}
				if l.MTU != 1400 || l.IP != ip1 {
					return fmt.Errorf("lease %s, want %s with mtu 1400", l, ip1)
				}
				t.Logf("after the edit eth0 got %s", l)
				return nil
			})
			// The edit survives the controller's next reconcile of the pool.
			if err := c.Get(ctx, key, cm); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(cm.Data["config.yaml"], "mtu: 1400") {
				t.Fatalf("the controller dropped the edit:\n%s", cm.Data["config.yaml"])
			}
		}},
		{"deleting the VM releases its addresses", func(t *testing.T) {
			if out, err := cluster.Kubectl(ctx, "delete", "-f", filepath.Join(examples, "vm.yaml")); err != nil {
				t.Fatalf("kubectl delete: %v\n%s", err, out)
			}
			assertReleased(t, mac1, ip1)
			eventually(t, 60*time.Second, "the VM's VMNetCfg is gone", func() error {
				if cfg := vmnetcfgOf(t, "test-vm"); cfg != nil {
					return fmt.Errorf("vmnetcfg %s still exists", cfg.Name)
				}
				return nil
			})
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Logf("agent log:\n%s", cluster.AgentLog(agent.Name))
			return
		}
	}
}

func dhcp(t *testing.T, vm *localcluster.VM, iface string, timeout time.Duration) *localcluster.Lease {
	t.Helper()
	var lease *localcluster.Lease
	eventually(t, timeout, "DHCP lease on "+iface, func() error {
		var err error
		lease, err = vm.DHCP(context.Background(), iface, 4*time.Second)
		return err
	})
	t.Logf("%s got %s", iface, lease)
	return lease
}

func vmnetcfgOf(t *testing.T, vmName string) *v1alpha1.VirtualMachineNetworkConfig {
	t.Helper()
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := cluster.Client().List(context.Background(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.VMName == vmName {
			return &list.Items[i]
		}
	}
	return nil
}

func sameMAC(a, b string) bool { return strings.EqualFold(a, b) }

// assertAllocated waits until the VMNetCfg status and the IPPool status
// both record ip for mac.
func assertAllocated(t *testing.T, mac, ip string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s allocated to %s in VMNetCfg and IPPool status", ip, mac), func() error {
		cfg := vmnetcfgOf(t, "test-vm")
		if cfg == nil {
			return fmt.Errorf("no VMNetCfg for test-vm")
		}
		found := false
		for _, nc := range cfg.Status.NetworkConfigs {
			if sameMAC(nc.MACAddress, mac) {
				if nc.AllocatedIPAddress != ip || nc.State != v1alpha1.StateAllocated {
					return fmt.Errorf("VMNetCfg status has %s %s for %s", nc.AllocatedIPAddress, nc.State, mac)
				}
				found = true
			}
		}
		if !found {
			return fmt.Errorf("VMNetCfg status has no entry for %s: %+v", mac, cfg.Status.NetworkConfigs)
		}
		p := &v1alpha1.IPPool{}
		if err := cluster.Client().Get(context.Background(), pool, p); err != nil {
			return err
		}
		if p.Status.IPv4 == nil || !sameMAC(p.Status.IPv4.Allocated[ip], mac) {
			return fmt.Errorf("IPPool status does not record %s for %s", ip, mac)
		}
		return nil
	})
}

// assertReleased waits until neither status records mac or ip.
func assertReleased(t *testing.T, mac, ip string) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%s of %s released", ip, mac), func() error {
		if cfg := vmnetcfgOf(t, "test-vm"); cfg != nil {
			for _, nc := range cfg.Status.NetworkConfigs {
				if sameMAC(nc.MACAddress, mac) {
					return fmt.Errorf("VMNetCfg status still has %s", mac)
				}
			}
		}
		p := &v1alpha1.IPPool{}
		if err := cluster.Client().Get(context.Background(), pool, p); err != nil {
			return err
		}
		if p.Status.IPv4 != nil {
			if owner, ok := p.Status.IPv4.Allocated[ip]; ok {
				return fmt.Errorf("IPPool status still allocates %s to %s", ip, owner)
			}
		}
		return nil
	})
}

func updateVM(t *testing.T, edit func(*kubevirtv1.VirtualMachine)) {
	t.Helper()
	eventually(t, 10*time.Second, "update the VM", func() error {
		vm := &kubevirtv1.VirtualMachine{}
		if err := cluster.Client().Get(context.Background(), types.NamespacedName{Namespace: "default", Name: "test-vm"}, vm); err != nil {
			return err
		}
		edit(vm)
		return cluster.Client().Update(context.Background(), vm)
	})
}

func setPaused(t *testing.T, paused bool) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("set the pool paused=%v", paused), func() error {
		p := &v1alpha1.IPPool{}
		if err := cluster.Client().Get(context.Background(), pool, p); err != nil {
			return err
		}
		p.Spec.Paused = ptr.To(paused)
		return cluster.Client().Update(context.Background(), p)
	})
}
