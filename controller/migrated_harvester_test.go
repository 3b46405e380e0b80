package controller

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// withHarvesterIPPoolCRD swaps the live IPPool CRD's schema for Harvester's
// published one while create runs, then puts ours back: the objects create
// writes are what a Harvester cluster holds in etcd when vm-dhcp takes over.
func withHarvesterIPPoolCRD(t *testing.T, create func() error) {
	withHarvesterCRD(t, "ippools", create)
}

// withHarvesterCRD is withHarvesterIPPoolCRD for any of the two CRDs (plural).
func withHarvesterCRD(t *testing.T, plural string, create func() error) {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile("../test/crds/harvester/network.harvesterhci.io_" + plural + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	var hv apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &hv); err != nil {
		t.Fatal(err)
	}
	sch := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	ext, err := client.New(restCfg, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	var live apiextensionsv1.CustomResourceDefinition
	key := types.NamespacedName{Name: plural + ".network.harvesterhci.io"}
	if err := ext.Get(ctx, key, &live); err != nil {
		t.Fatal(err)
	}
	ours := live.Spec.DeepCopy()
	set := func(spec apiextensionsv1.CustomResourceDefinitionSpec) {
		eventually(t, 20*time.Second, "update IPPool CRD", func() error {
			if err := ext.Get(ctx, key, &live); err != nil {
				return err
			}
			live.Spec = spec
			return ext.Update(ctx, &live)
		})
	}
	hvSpec := ours.DeepCopy()
	hvSpec.Versions = hv.Spec.Versions
	set(*hvSpec)
	defer set(*ours)
	// The apiserver picks the new schema up asynchronously: retry.
	eventually(t, 20*time.Second, "create under Harvester's schema", create)
}

// TestMigratedPoolHarvesterAdmittedKeepsServing: Harvester's CRD and
// webhook admit an exclude entry that is no address (here a CIDR, a natural
// way to write "exclude this block"); Harvester's controller revokes it as a
// no-op and keeps serving the pool. After migration the same stored pool must
// still get its IPAM built (CacheReady True) and keep its VM's address; today
// ipam.New refuses the config and the pool is never served.
func TestMigratedPoolHarvesterAdmittedKeepsServing(t *testing.T) {
	for _, exclude := range []string{"192.168.100.0/28", "::ffff:192.168.100.15"} {
		t.Run(exclude, func(t *testing.T) {
			ctx := context.Background()
			ns := newNamespace(t)
			createNAD(t, ns, "net", nil)
			pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20", v1alpha1.IPv4Address(exclude))
			withHarvesterIPPoolCRD(t, func() error {
				p := pool.DeepCopy()
				if err := k8s.Create(ctx, p); err != nil {
					return fmt.Errorf("create: %w", err)
				}
				p.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{
					"192.168.100.10": "02:00:00:00:01:01", exclude: "EXCLUDED",
				}}
				return k8s.Status().Update(ctx, p)
			})
			startController(t, managerOpts{})
			waitPoolCondition(t, types.NamespacedName{Namespace: ns, Name: "pool"}, v1alpha1.CacheReady, corev1.ConditionTrue)
		})
	}
}

// TestMigratedVMNetCfgEmptyVMNameServed: Harvester's CRD admits a
// VMNetCfg with vmName "" (required, no minLength) and its controller
// allocates it like any other. A stored one must keep getting its address
// after migration.
func TestMigratedVMNetCfgEmptyVMNameServed(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	create(t, newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20"))
	vnc := newVMNetCfg(ns, "vm", nic(ns+"/net", "02:00:00:00:01:01"))
	vnc.Spec.VMName = ""
	withHarvesterCRD(t, "virtualmachinenetworkconfigs", func() error { return k8s.Create(ctx, vnc.DeepCopy()) })
	startController(t, managerOpts{})
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "vm"}, "allocated", allocatedIs(corev1.ConditionTrue, ReasonAllocated,
		map[string]string{"02:00:00:00:01:01": "192.168.100.10"}, v1alpha1.StateAllocated))
}

// TestMigratedVMNetCfgMappedIPServed: Harvester's CRD (format ipv4)
// admits a requested ipAddress in IPv4-mapped form and its IPAM (net.ParseIP)
// allocates 192.168.100.15 for it. After migration the stored VMNetCfg must
// keep that address.
func TestMigratedVMNetCfgMappedIPServed(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	// What Harvester's controller recorded for it.
	pool.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"192.168.100.15": "02:00:00:00:01:01"}}
	if err := k8s.Status().Update(ctx, pool); err != nil {
		t.Fatal(err)
	}
	vnc := newVMNetCfg(ns, "vm", nic(ns+"/net", "02:00:00:00:01:01", "::ffff:192.168.100.15"))
	withHarvesterCRD(t, "virtualmachinenetworkconfigs", func() error { return k8s.Create(ctx, vnc.DeepCopy()) })
	startController(t, managerOpts{})
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "vm"}, "allocated", allocatedIs(corev1.ConditionTrue, ReasonAllocated,
		map[string]string{"02:00:00:00:01:01": "192.168.100.15"}, v1alpha1.StateAllocated))
}
