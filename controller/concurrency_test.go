package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// bigPool is a pool of 10.20.0.10-10.20.<x>.250 on a /16.
func bigPool(ns, name, network, end string) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.IPPoolSpec{NetworkName: network, IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "10.20.0.2", CIDR: "10.20.0.0/16", Router: "10.20.0.1",
			Pool: v1alpha1.Pool{Start: "10.20.0.10", End: v1alpha1.IPv4Address(end)},
		}},
	}
}

func macOf(i int) string {
	return fmt.Sprintf("02:10:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
}

// createVMNetCfgs creates n VMNetCfgs from workers goroutines; after is
// called once, when half of them exist.
func createVMNetCfgs(t testing.TB, ns, network string, n, workers int, half func()) {
	t.Helper()
	if err := createVMNetCfgsErr(ns, network, n, workers, half); err != nil {
		t.Fatal(err)
	}
}

func createVMNetCfgsErr(ns, network string, n, workers int, half func()) error {
	var wg sync.WaitGroup
	var once sync.Once
	next := make(chan int)
	errs := make(chan error, n)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if i == n/2 && half != nil {
					once.Do(half)
				}
				v := newVMNetCfg(ns, fmt.Sprintf("vm-%04d", i), nic(network, macOf(i)))
				if err := k8s.Create(context.Background(), v); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("create vmnetcfg: %w", err)
	}
	return nil
}

// allocations returns MAC -> IP of every Allocated NIC in ns, and how many
// VMNetCfgs are not (yet) Allocated.
func allocations(t testing.TB, ns string) (map[string]string, int) {
	t.Helper()
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	pending := 0
	for _, v := range list.Items {
		if !v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated) {
			pending++
			continue
		}
		for _, st := range v.Status.NetworkConfigs {
			out[st.MACAddress] = st.AllocatedIPAddress
		}
	}
	return out, pending
}

// checkConsistent checks that the VMNetCfgs and the pool agree: n distinct
// addresses, each recorded in the pool for its MAC, used == n, nothing else.
func checkConsistent(t testing.TB, ns string, pk types.NamespacedName, n int) map[string]string {
	t.Helper()
	got, pending := allocations(t, ns)
	if pending != 0 || len(got) != n {
		t.Fatalf("%d allocated, %d pending, want %d allocated", len(got), pending, n)
	}
	seen := map[string]string{}
	for mac, ip := range got {
		if other, dup := seen[ip]; dup {
			t.Errorf("address %s given to %s and %s", ip, other, mac)
		}
		seen[ip] = mac
	}
	recorded := poolAllocated(t, pk)
	if len(recorded) != n {
		t.Errorf("pool records %d allocations, want %d (leak or loss)", len(recorded), n)
	}
	for ip, mac := range seen {
		if recorded[ip] != mac {
			t.Errorf("vmnetcfg has %s=%s, pool records %q", ip, mac, recorded[ip])
		}
	}
	if p := getPool(t, pk); p.Status.IPv4.Used != n {
		t.Errorf("pool used = %d, want %d", p.Status.IPv4.Used, n)
	}
	return got
}

// 1,000 VMNetCfgs created at once against two controllers running without
// leader election, one of which is killed half-way and replaced: every
// NIC gets its own address, the pool records exactly those, and a later
// restart changes nothing.
func TestConcurrentAllocationsWithTwoControllersAndRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 objects")
	}
	const n = 1000
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := bigPool(ns, "pool", ns+"/net", "10.20.15.250")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	a := startController(t, managerOpts{})
	b := startController(t, managerOpts{})
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)

	createVMNetCfgs(t, ns, ns+"/net", n, 16, func() {
		a.stop() // killed mid-way, with allocations in flight
		startController(t, managerOpts{})
	})
	eventually(t, 120*time.Second, "all allocated", func() error {
		got, pending := allocations(t, ns)
		if pending != 0 || len(got) != n {
			return fmt.Errorf("%d allocated, %d pending", len(got), pending)
		}
		return nil
	})
	before := checkConsistent(t, ns, pk, n)
	t.Logf("status writes: controller a %d, b %d", a.store.StatusWrites(), b.store.StatusWrites())

	// Simulate a crash between the pool write and the VMNetCfg write: with
	// every controller stopped, wipe some VMNetCfg statuses. A restarted
	// controller must give each the address recorded for its MAC.
	b.stop()
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < n; i += 97 {
		v := getVNC(t, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("vm-%04d", i)})
		v.Status = v1alpha1.VirtualMachineNetworkConfigStatus{}
		if err := k8s.Status().Update(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	// Stop the replacement started half-way too (t.Cleanup would), then restart.
	stopAllControllers(t)
	startController(t, managerOpts{})
	eventually(t, 60*time.Second, "all allocated after restart", func() error {
		got, pending := allocations(t, ns)
		if pending != 0 || len(got) != n {
			return fmt.Errorf("%d allocated, %d pending", len(got), pending)
		}
		return nil
	})
	after := checkConsistent(t, ns, pk, n)
	if !mapsEqual(before, after) {
		for mac, ip := range before {
			if after[mac] != ip {
				t.Errorf("%s had %s before the restart, %s after", mac, ip, after[mac])
			}
		}
	}
}
