package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// OrphanSweeper releases allocations whose VirtualMachineNetworkConfig is
// gone. The finalizer releases a deleted VMNetCfg's addresses, but a release
// can still lose a race with an allocation already in flight for the same
// MAC (two controllers in split brain, or a leader that allocated just before
// it lost its lease); the sweep is the backstop that makes such a leak
// temporary.
//
// It is safe against allocations racing with it because of the order of its
// reads: the pool is read first, then the VMNetCfgs, both uncached (quorum
// reads). An allocation is only ever made for a VMNetCfg that already
// exists, so any (address, MAC) entry present in the earlier pool read whose
// MAC no VMNetCfg lists in the later read has lost its owner for good. Only
// those exact pairs are released, through the pool store (optimistic
// concurrency), so an address re-allocated in between to another MAC is left
// alone.
type OrphanSweeper struct {
	Reader   client.Reader // uncached
	Store    *PoolStore
	Interval time.Duration
	Log      logr.Logger
}

// Start implements manager.Runnable; it runs only on the leader.
func (s *OrphanSweeper) Start(ctx context.Context) error {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil {
				s.Log.Error(err, "sweep orphaned allocations")
			}
		}
	}
}

// Sweep runs one pass over every pool and returns how many allocations it released.
func (s *OrphanSweeper) Sweep(ctx context.Context) (int, error) {
	var pools v1alpha1.IPPoolList
	if err := s.Reader.List(ctx, &pools); err != nil {
		return 0, fmt.Errorf("list ippools: %w", err)
	}
	var cfgs v1alpha1.VirtualMachineNetworkConfigList
	if err := s.Reader.List(ctx, &cfgs); err != nil {
		return 0, fmt.Errorf("list vmnetcfgs: %w", err)
	}
	owned := OwnedMACs(cfgs.Items)
	released := 0
	for i := range pools.Items {
		p := &pools.Items[i]
		orphans, orphans6 := Orphans(p, owned), Orphans6(p, owned)
		if len(orphans)+len(orphans6) == 0 || !p.DeletionTimestamp.IsZero() {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		var freed []string
		err := s.Store.DoDual(ctx, key, func(_ *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) error {
			freed = freed[:0] // the op is applied again after a write conflict
			for ip, mac := range orphans {
				if am == nil { // IPv6-only pool: no IPv4 entries to release
					break
				}
				if owner, ok := am.Owner(ip); ok && owner == mac && am.Release(ip) == nil {
					freed = append(freed, ip+"="+mac)
				}
			}
			freed = append(freed, releaseOrphans6(am6, orphans6)...)
			return nil
		})
		if err != nil {
			return released, fmt.Errorf("release orphans of ippool %s: %w", key, err)
		}
		if len(freed) > 0 {
			s.Log.Info("released orphaned allocations", "ippool", key, "entries", freed)
		}
		released += len(freed)
	}
	return released, nil
}

// OwnedMACs maps each network to the MACs that some VMNetCfg lists for it,
// in its spec or its status. A VMNetCfg being deleted still owns its MACs:
// its finalizer releases them.
func OwnedMACs(cfgs []v1alpha1.VirtualMachineNetworkConfig) map[string]map[string]bool {
	owned := map[string]map[string]bool{}
	add := func(network, ns, mac string) {
		n := normalizeNetwork(network, ns)
		if owned[n] == nil {
			owned[n] = map[string]bool{}
		}
		owned[n][ipam.NormalizeMAC(mac)] = true
	}
	for i := range cfgs {
		c := &cfgs[i]
		for _, nc := range c.Spec.NetworkConfigs {
			add(nc.NetworkName, c.Namespace, nc.MACAddress)
		}
		for _, st := range c.Status.NetworkConfigs {
			add(st.NetworkName, c.Namespace, st.MACAddress)
		}
	}
	return owned
}

// Orphans returns the allocations (address -> MAC) of pool whose MAC no
// VMNetCfg owns on the pool's network. Marks are never orphans.
func Orphans(pool *v1alpha1.IPPool, owned map[string]map[string]bool) map[string]string {
	if pool.Status.IPv4 == nil {
		return nil
	}
	out := map[string]string{}
	macs := owned[pool.Spec.NetworkName]
	for ip, mac := range pool.Status.IPv4.Allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		if !macs[ipam.NormalizeMAC(mac)] {
			out[ip] = mac
		}
	}
	return out
}
