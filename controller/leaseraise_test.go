package controller

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// The agent serves min(spec leaseTime, status.ipv4.leaseTime), so a raise
// takes effect only once the controller records it: a spec change that
// allocates or releases nothing must still write status.ipv4.leaseTime, or
// the raise never reaches the wire.
func TestLeaseTimeRaiseRecordedInStatus(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.11")
	pool.Spec.IPv4Config.LeaseTime = ptr.To(60)
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	served := func(want time.Duration) func() error {
		return func() error {
			p := getPool(t, pk)
			v, err := poolwatch.FromIPPool(p)
			if err != nil {
				return err
			}
			if v.LeaseTime != want {
				var rec any = "unset"
				if p.Status.IPv4 != nil && p.Status.IPv4.LeaseTime != nil {
					rec = *p.Status.IPv4.LeaseTime
				}
				return fmt.Errorf("agent serves %s (status.ipv4.leaseTime %v), want %s", v.LeaseTime, rec, want)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "the agent serves 60s", served(time.Minute))
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(86400) })
	eventually(t, 20*time.Second, "the raise is recorded and served", served(24*time.Hour))
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.IPv4Config.LeaseTime = ptr.To(600) })
	eventually(t, 20*time.Second, "the lowering is served", served(10*time.Minute))
}
