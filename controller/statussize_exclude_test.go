package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Review 12 (R3): a full /18 pool (the size the webhook admits), paused,
// 8000 of its allocated addresses excluded (the spec update itself fits),
// unpaused. Each dropped allocation becomes an EXCLUDED mark plus a
// quarantine entry, 22+ bytes more than the allocation, so the rebuilt
// status no longer fits in etcd: every write fails, releases included
// (VMs deleted stay Terminating), until someone removes the exclude.
// Issue 12 item 10 wants releases to keep working. Fix: have the webhook
// refuse an exclude/range change whose rebuilt status (marks + quarantines
// of the dropped allocations) cannot fit, or cap what a rebuild records.
func TestExcludeOfFullPoolKeepsReleasesWorking(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.0.2", CIDR: "192.168.0.0/16", Router: "192.168.0.1",
			Pool: v1alpha1.Pool{Start: "192.168.128.0", End: "192.168.191.255"},
		}},
	}
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	first := uint32(192<<24 | 168<<16 | 128<<8)
	eventually(t, 20*time.Second, "write a full status", func() error {
		_, err := fillStatus(t, pk, first, ipam.MaxStatusAddresses)
		return err
	})
	const n = 8000
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.Paused = ptr.To(true) })
	exclude := func(p *v1alpha1.IPPool) {
		for i := range n {
			p.Spec.IPv4Config.Pool.Exclude = append(p.Spec.IPv4Config.Pool.Exclude, v1alpha1.IPv4Address(u32addr(first+100+uint32(i))))
		}
	}
	// What the webhook computes (it refuses the update past the limit:
	// webhook TestExcludeThatOverflowsRebuiltStatusRefused).
	old := getPool(t, pk)
	edited := old.DeepCopy()
	exclude(edited)
	predicted, err := RebuiltObjectBytes(old, edited, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if predicted <= ipam.MaxObjectBytes {
		t.Fatalf("the webhook's estimate of the rebuilt pool is %d bytes, under the %d limit: it would admit this exclude", predicted, ipam.MaxObjectBytes)
	}
	editPool(t, ctl.store, pk, exclude)
	editPool(t, ctl.store, pk, func(p *v1alpha1.IPPool) { p.Spec.Paused = nil })
	t.Logf("object after the exclude: %d bytes (etcd limit %d)", objectSize(t, pk), etcdLimit)
	// The VM holding an address that stays in the pool is deleted.
	const i = 9000
	if err := ctl.store.Do(context.Background(), pk, ReleaseOp(macOf(i), fmt.Sprintf("owner-%016d-xxxx", i))); err != nil {
		// This test writes with the webhook bypassed. Documented limitation
		// (controller/README.md, "Status size"): the webhook refuses the
		// update; stored without it, writes fail until the exclude is undone.
		t.Skipf("webhook bypassed (it refuses this update: rebuilt pool %d bytes, over %d); release after excluding %d of a full pool's addresses fails: %v",
			predicted, ipam.MaxObjectBytes, n, err)
	}
	if _, still := getPool(t, pk).Status.IPv4.Allocated[u32addr(first+i)]; still {
		t.Fatal("release not written")
	}
}
