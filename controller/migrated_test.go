package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// TestDeletingMigratedObjectsCompletes: objects Harvester's add-on handled
// carry its wrangler finalizers; after the migration nothing of Harvester
// runs, so our controller removes them with its own, and deleting a
// migrated VMNetCfg and then its pool completes.
func TestDeletingMigratedObjectsCompletes(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	pool.Finalizers = []string{HarvesterIPPoolFinalizer}
	create(t, pool)
	poolKey := types.NamespacedName{Namespace: ns, Name: "pool"}
	waitPoolCondition(t, poolKey, v1alpha1.CacheReady, corev1.ConditionTrue)
	vnc := newVMNetCfg(ns, "vm", nic(ns+"/net", "02:00:00:00:01:01"))
	vnc.Finalizers = []string{HarvesterVMNetCfgFinalizer}
	create(t, vnc)
	vncKey := types.NamespacedName{Namespace: ns, Name: "vm"}
	waitVMNetCfg(t, vncKey, "allocated", allocatedIs(corev1.ConditionTrue, ReasonAllocated,
		map[string]string{"02:00:00:00:01:01": "192.168.100.10"}, v1alpha1.StateAllocated))

	for _, o := range []struct {
		obj client.Object
		key types.NamespacedName
	}{{&v1alpha1.VirtualMachineNetworkConfig{}, vncKey}, {&v1alpha1.IPPool{}, poolKey}} {
		if err := k8s.Get(ctx, o.key, o.obj); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Delete(ctx, o.obj); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, fmt.Sprintf("%T %s deleted", o.obj, o.key), func() error {
			err := k8s.Get(ctx, o.key, o.obj)
			if isNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there with finalizers %v (%v)", o.obj.GetFinalizers(), err)
		})
		if o.key == vncKey {
			waitPoolAllocated(t, poolKey, map[string]string{})
		}
	}
}
