package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func TestOrphans(t *testing.T) {
	cfgs := []v1alpha1.VirtualMachineNetworkConfig{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "a", UID: "uid-a"},
			Spec: v1alpha1.VirtualMachineNetworkConfigSpec{NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "default/net", MACAddress: "02:00:00:00:00:0A"}}}},
		// Only in the status (a NIC being removed): still owned until released.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "b", UID: "uid-b"},
			Status: v1alpha1.VirtualMachineNetworkConfigStatus{NetworkConfigs: []v1alpha1.NetworkConfigStatus{{NetworkName: "default/net", MACAddress: "02-00-00-00-00-0b"}}}},
		// Same MAC on another network does not own this pool's entry.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "c", UID: "uid-c"},
			Spec: v1alpha1.VirtualMachineNetworkConfigSpec{NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "default/other", MACAddress: "02:00:00:00:00:0c"}}}},
		// d lists MAC :0d, but the entry of :0d was made for a deleted VMNetCfg.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "d", UID: "uid-d2"},
			Spec: v1alpha1.VirtualMachineNetworkConfigSpec{NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "default/net", MACAddress: "02:00:00:00:00:0d"}}}},
	}
	pool := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net"},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: map[string]string{
			"10.0.0.1": "RESERVED", "10.0.0.5": "EXCLUDED",
			"10.0.0.10": "02:00:00:00:00:0a", "10.0.0.11": "02:00:00:00:00:0b", "10.0.0.12": "02:00:00:00:00:0c",
			"10.0.0.13": "02:00:00:00:00:0d",
		}, Owners: map[string]string{"10.0.0.10": "uid-a", "10.0.0.13": "uid-d1"}}}}
	got := Orphans(pool, OwnedNICs(cfgs))
	want := []Orphan{{IP: "10.0.0.12", MAC: "02:00:00:00:00:0c"}, {IP: "10.0.0.13", MAC: "02:00:00:00:00:0d", Owner: "uid-d1"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Orphans = %v; want %v", got, want)
	}
}

// A leaked allocation (an entry whose VMNetCfg is gone, as a lost race between
// two controllers leaves it) is released by the sweep; owned ones stay.
func TestOrphanSweepReleasesLeaks(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{sweep: 500 * time.Millisecond})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)

	a := newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a"))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:00:0a": "192.168.100.10"}, v1alpha1.StateAllocated))

	// Another writer records an allocation no VMNetCfg owns.
	eventually(t, 10*time.Second, "inject a leaked entry", func() error {
		p := getPool(t, pk)
		p.Status.IPv4.Allocated["192.168.100.15"] = "02:00:00:00:00:ff"
		p.Status.IPv4.Used++
		p.Status.IPv4.Available--
		return k8s.Status().Update(ctx, p)
	})
	waitPoolAllocated(t, pk, map[string]string{"192.168.100.10": "02:00:00:00:00:0a"})
	p := getPool(t, pk)
	if p.Status.IPv4.Used != 1 {
		t.Fatalf("used = %d after the sweep, want 1", p.Status.IPv4.Used)
	}
	// The owned allocation survived several more sweeps.
	time.Sleep(1500 * time.Millisecond)
	if got := poolAllocated(t, pk); fmt.Sprint(got) != fmt.Sprint(map[string]string{"192.168.100.10": "02:00:00:00:00:0a"}) {
		t.Fatalf("after more sweeps the pool holds %v", got)
	}
}
