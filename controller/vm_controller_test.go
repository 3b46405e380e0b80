package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func newVM(ns, name string, macAnnotation string, nics ...kubevirtv1.Network) *kubevirtv1.VirtualMachine {
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			Spec: kubevirtv1.VirtualMachineInstanceSpec{Networks: nics},
		}},
	}
	if macAnnotation != "" {
		vm.Annotations = map[string]string{AnnotationMACAddresses: macAnnotation}
	}
	return vm
}

func multusNet(name, network string) kubevirtv1.Network {
	return kubevirtv1.Network{Name: name, NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: network}}}
}

func TestVirtualMachineBuildsItsVMNetCfg(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	for _, n := range []string{"net-a", "net-b", "unmanaged"} {
		createNAD(t, ns, n, nil)
	}
	poolA := newPool(ns, "pool-a", ns+"/net-a", "192.168.100.10", "192.168.100.20")
	poolB := newPool(ns, "pool-b", ns+"/net-b", "192.168.100.10", "192.168.100.20")
	create(t, poolA)
	create(t, poolB)
	waitPoolCondition(t, types.NamespacedName{Namespace: ns, Name: "pool-a"}, v1alpha1.CacheReady, corev1.ConditionTrue)
	waitPoolCondition(t, types.NamespacedName{Namespace: ns, Name: "pool-b"}, v1alpha1.CacheReady, corev1.ConditionTrue)

	// nic2 on net-b (bare name, same namespace) has its MAC on the
	// interface; nic1 on net-a gets it from the annotation; the pod network
	// and the unmanaged network are skipped.
	vm := newVM(ns, "vm1", `{"nic1":"02:00:00:00:aa:01"}`,
		kubevirtv1.Network{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}},
		multusNet("nic2", "net-b"),
		multusNet("nic1", ns+"/net-a"),
		multusNet("nic3", ns+"/unmanaged"),
	)
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{
		{Name: "default", MacAddress: "02:00:00:00:ff:ff"},
		{Name: "nic2", MacAddress: "02:00:00:00:bb:02"},
		{Name: "nic3", MacAddress: "02:00:00:00:cc:03"},
	}
	create(t, vm)
	key := types.NamespacedName{Namespace: ns, Name: "vm1"}
	v := waitVMNetCfg(t, key, "vm1 vmnetcfg allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:aa:01": "192.168.100.10", "02:00:00:00:bb:02": "192.168.100.10"}, v1alpha1.StateAllocated))
	want := []v1alpha1.NetworkConfig{nic(ns+"/net-a", "02:00:00:00:aa:01"), nic(ns+"/net-b", "02:00:00:00:bb:02")}
	if fmt.Sprint(v.Spec.NetworkConfigs) != fmt.Sprint(want) {
		t.Errorf("spec = %+v, want %+v", v.Spec.NetworkConfigs, want)
	}
	if v.Spec.VMName != "vm1" || v.Labels[LabelVMName] != "vm1" {
		t.Errorf("vmName %q labels %v", v.Spec.VMName, v.Labels)
	}
	if len(v.OwnerReferences) != 1 || v.OwnerReferences[0].Kind != "VirtualMachine" || v.OwnerReferences[0].UID != vm.UID {
		t.Errorf("owner references %+v", v.OwnerReferences)
	}
	rv := v.ResourceVersion
	// No flapping: poking the VM changes nothing.
	updateVM(t, key, func(vm *kubevirtv1.VirtualMachine) { vm.Labels = map[string]string{"poke": "1"} })
	time.Sleep(time.Second)
	if now := getVNC(t, key).ResourceVersion; now != rv {
		t.Errorf("vmnetcfg rewritten without a change: %s -> %s", rv, now)
	}

	// Remove nic2: its address is released; add nic4 on net-a: allocated.
	updateVM(t, key, func(vm *kubevirtv1.VirtualMachine) {
		vm.Spec.Template.Spec.Networks = []kubevirtv1.Network{multusNet("nic1", ns+"/net-a"), multusNet("nic4", ns+"/net-a")}
		vm.Spec.Template.Spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{{Name: "nic4", MacAddress: "02:00:00:00:dd:04"}}
	})
	waitVMNetCfg(t, key, "NICs changed",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:aa:01": "192.168.100.10", "02:00:00:00:dd:04": "192.168.100.11"}, v1alpha1.StateAllocated))
	waitPoolAllocated(t, types.NamespacedName{Namespace: ns, Name: "pool-b"}, map[string]string{})
	waitPoolAllocated(t, types.NamespacedName{Namespace: ns, Name: "pool-a"}, map[string]string{"192.168.100.10": "02:00:00:00:aa:01", "192.168.100.11": "02:00:00:00:dd:04"})

	// Last multus NIC gone: the vmnetcfg goes, addresses released.
	updateVM(t, key, func(vm *kubevirtv1.VirtualMachine) {
		vm.Spec.Template.Spec.Networks = []kubevirtv1.Network{{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}}}
	})
	eventually(t, 20*time.Second, "vmnetcfg deleted", func() error {
		if err := k8s.Get(ctx, key, &v1alpha1.VirtualMachineNetworkConfig{}); !isNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	waitPoolAllocated(t, types.NamespacedName{Namespace: ns, Name: "pool-a"}, map[string]string{})

	// A VM on a network whose pool appears later gets its vmnetcfg then.
	createNAD(t, ns, "net-c", nil)
	vm2 := newVM(ns, "vm2", `{"nic1":"02:00:00:00:ee:01"}`, multusNet("nic1", ns+"/net-c"))
	create(t, vm2)
	time.Sleep(500 * time.Millisecond)
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "vm2"}, &v1alpha1.VirtualMachineNetworkConfig{}); !isNotFound(err) {
		t.Fatalf("vmnetcfg for a network without pool: %v", err)
	}
	create(t, newPool(ns, "pool-c", ns+"/net-c", "192.168.100.10", "192.168.100.20"))
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "vm2"}, "vm2 allocated once its pool exists",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, map[string]string{"02:00:00:00:ee:01": "192.168.100.10"}, v1alpha1.StateAllocated))
	// Deleting the VM (no garbage collector in envtest) removes its vmnetcfg and releases.
	if err := k8s.Delete(ctx, vm2); err != nil {
		t.Fatal(err)
	}
	waitPoolAllocated(t, types.NamespacedName{Namespace: ns, Name: "pool-c"}, map[string]string{})
}

func updateVM(t testing.TB, key types.NamespacedName, edit func(*kubevirtv1.VirtualMachine)) {
	t.Helper()
	for range 10 {
		vm := &kubevirtv1.VirtualMachine{}
		if err := k8s.Get(context.Background(), key, vm); err != nil {
			t.Fatal(err)
		}
		edit(vm)
		err := k8s.Update(context.Background(), vm)
		if err == nil {
			return
		}
		if !isConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatal("too many conflicts")
}
