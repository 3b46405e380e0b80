package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
// It never frees a live allocation. The pool is read first, then the
// VMNetCfgs, both uncached (quorum reads). An allocation is only ever made
// for a VMNetCfg that already exists, and records that VMNetCfg's UID (its
// owner) in status.ipv4.owners, so an entry present in the earlier pool read
// whose owner is not among the later list has lost its owner for good.
// Only that exact (address, MAC, owner) entry is released, compared against
// the pool store's current view (and written with optimistic concurrency):
// if the VMNetCfg was deleted and another one with the same MAC got the same
// address in between, the entry's owner differs and it is left alone.
// Entries recorded without an owner (by Harvester's controller) are orphans
// when no VMNetCfg lists their MAC on the network; once a VMNetCfg claims
// such an entry it becomes its owner, so the same comparison protects it.
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
	owned := OwnedNICs(cfgs.Items)
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
			// IPv6 first: in a dual-stack pool it compares with the IPv4
			// owner as it is before this sweep releases anything.
			freed = append(freed, releaseOrphans6(am, am6, orphans6)...)
			for _, o := range orphans {
				if am == nil { // IPv6-only pool: no IPv4 entries to release
					break
				}
				if am.ReleaseExact(o.IP, o.MAC, o.Owner) {
					freed = append(freed, o.IP+"="+o.MAC)
				}
			}
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

// NIC is a MAC on a network, and the UID of a VMNetCfg that lists it.
type NIC struct{ Network, MAC, Owner string }

// Owned is what the VMNetCfgs list: each (network, MAC, owner UID), and each
// (network, MAC) with any owner.
type Owned map[NIC]bool

// OwnedNICs collects the NICs that the VMNetCfgs list, in their spec or
// their status. A VMNetCfg being deleted still owns its NICs: its finalizer
// releases them.
func OwnedNICs(cfgs []v1alpha1.VirtualMachineNetworkConfig) Owned {
	owned := Owned{}
	add := func(network, ns, mac, uid string) {
		n := NIC{Network: normalizeNetwork(network, ns), MAC: ipam.NormalizeMAC(mac)}
		owned[n] = true
		n.Owner = uid
		owned[n] = true
	}
	for i := range cfgs {
		c := &cfgs[i]
		for _, nc := range c.Spec.NetworkConfigs {
			add(nc.NetworkName, c.Namespace, nc.MACAddress, ownerToken(c.UID))
		}
		for _, st := range c.Status.NetworkConfigs {
			add(st.NetworkName, c.Namespace, st.MACAddress, ownerToken(c.UID))
		}
	}
	return owned
}

// Orphan is an allocation of a pool that no VMNetCfg owns.
type Orphan struct{ IP, MAC, Owner string }

// Orphans returns the allocations of pool whose owner no longer lists their
// MAC on the pool's network (for entries without a recorded owner: whose
// MAC no VMNetCfg lists there). Marks are never orphans.
func Orphans(pool *v1alpha1.IPPool, owned Owned) []Orphan {
	if pool.Status.IPv4 == nil {
		return nil
	}
	var out []Orphan
	for ip, mac := range pool.Status.IPv4.Allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		n := NIC{Network: pool.Network(), MAC: ipam.NormalizeMAC(mac), Owner: pool.Status.IPv4.Owners[ip]}
		if !owned[n] {
			out = append(out, Orphan{IP: ip, MAC: n.MAC, Owner: n.Owner})
		}
	}
	slices.SortFunc(out, func(a, b Orphan) int { return strings.Compare(a.IP, b.IP) })
	return out
}
