package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// A leaked IPv6 allocation is released by the sweep like an IPv4 one.
func TestOrphanSweepReleasesIPv6Leaks(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{sweep: 500 * time.Millisecond})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	net := ns + "/net"
	pool := withIPv6(newPool(ns, "pool", net, "192.168.100.10", "192.168.100.20"), "fd00:100::10", "fd00:100::20")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	a := newVMNetCfg(ns, "a", nic(net, "02:00:00:00:00:0a"))
	create(t, a)
	waitVMNetCfg(t, client.ObjectKeyFromObject(a), "a allocated", nicIs("02:00:00:00:00:0a", "192.168.100.10", "fd00:100::10", v1alpha1.StateAllocated))

	eventually(t, 10*time.Second, "inject a leaked IPv6 entry", func() error {
		p := getPool(t, pk)
		p.Status.IPv6.Allocated["fd00:100::15"] = "02:00:00:00:00:ff"
		return k8s.Status().Update(ctx, p)
	})
	eventually(t, 10*time.Second, "IPv6 leak released", func() error {
		if got := poolAllocated6(t, pk); len(got) != 1 || got["fd00:100::10"] != "02:00:00:00:00:0a" {
			return fmt.Errorf("status.ipv6 = %v", got)
		}
		return nil
	})
}
