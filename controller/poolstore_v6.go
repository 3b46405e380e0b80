package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// ErrNoFamily is returned for an address asked of a family the pool does not
// have (an IPv6 address in an IPv4-only pool, or the reverse).
var ErrNoFamily = errors.New("the ippool has no such address family")

// DualOp changes both halves of a pool in one status write: am is nil for an
// IPv6-only pool, am6 nil for an IPv4-only one. Like a PoolOp, a family
// whose change fails must be left as the op found it; the other family may
// still change (a NIC keeps its IPv4 address when the IPv6 range is full).
type DualOp func(pool *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) error

// DoDual queues op like Do and waits until it is durably in the IPPool status.
func (s *PoolStore) DoDual(ctx context.Context, key types.NamespacedName, op DualOp) error {
	return s.do(ctx, key, &pendingOp{dual: op})
}

// DoDualAllocate is DoAllocate for a DualOp: while the pool's status is too
// large it fails with ErrStatusTooLarge without being applied (neither half).
func (s *PoolStore) DoDualAllocate(ctx context.Context, key types.NamespacedName, op DualOp) error {
	return s.do(ctx, key, &pendingOp{dual: op, allocates: true})
}

// run applies one queued operation on the pool's IPAMs.
func (p *pendingOp) run(obj *v1alpha1.IPPool, ps *poolState) error {
	if p.dual == nil {
		return p.apply(obj, ps.am)
	}
	am := ps.am
	if !obj.HasIPv4() {
		am = nil // ps.am is the placeholder of an IPv6-only pool
	}
	return p.dual(obj, am, ps.am6)
}

// noIPv4 is the IPv4 IPAM of an IPv6-only pool: one address, excluded, so
// that the IPv4 operations (which expect an IPAM) find nothing to give or
// release. Its status is never written (fillIPv4 is skipped).
func noIPv4() *ipam.Pool {
	am, err := ipam.New(ipam.Config{CIDR: "0.0.0.0/32", Start: "0.0.0.0", End: "0.0.0.0", Exclude: []string{"0.0.0.0"}})
	if err != nil {
		panic(fmt.Sprintf("placeholder IPv4 IPAM: %v", err))
	}
	return am
}

// buildIPAMs builds both halves of a pool's IPAM from its spec and restores
// the allocations of its status, their owners and the quarantined
// addresses. It returns the recorded allocations of either family it could
// not keep (quarantined for their MAC, reported and reallocated by the
// store).
func (s *PoolStore) buildIPAMs(key types.NamespacedName, pool *v1alpha1.IPPool) (*ipam.Pool, *ipam.Pool6, []ipam.Conflict, error) {
	am, am6, dropped, err := buildPoolIPAMs(pool, s.now)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("build IPAM of pool %s: %w", key, err)
	}
	if bad := am.IgnoredExclude(); len(bad) > 0 {
		// Admitted by Harvester (and, with a warning, by our webhook).
		s.log.Info("exclude entries that are no address ignored", "ippool", key, "entries", bad)
	}
	for _, c := range dropped {
		// Kept out of the IPAM's allocations, and so out of the next
		// status write (quarantined for its MAC instead): the entry
		// cannot be honoured (e.g. the address is now excluded).
		// Reported on the pool with that write, and its VMNetCfg is
		// allocated again (OnDropped).
		s.log.Info("recorded allocation dropped", "ippool", key, "ip", c.IP, "mac", c.MAC, "reason", c.Err.Error())
	}
	return am, am6, dropped, nil
}

// buildPoolIPAMs is buildIPAMs without the logging (also used by
// RebuiltObjectBytes, so that the webhook's estimate is the controller's
// rebuild). am is noIPv4() for an IPv6-only pool, am6 nil without
// spec.ipv6Config.
func buildPoolIPAMs(pool *v1alpha1.IPPool, now func() time.Time) (*ipam.Pool, *ipam.Pool6, []ipam.Conflict, error) {
	am := noIPv4()
	var dropped []ipam.Conflict
	if pool.HasIPv4() {
		var err error
		if am, dropped, err = buildIPAM(pool, now); err != nil {
			return nil, nil, nil, err
		}
	}
	if !pool.HasIPv6() {
		return am, nil, dropped, nil
	}
	am6, dropped6, err := buildIPAM6(pool, now)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ipv6: %w", err)
	}
	return am, am6, append(dropped, dropped6...), nil
}

// buildIPAM6 is buildIPAM for the IPv6 half: the quarantine is the valid
// lifetime (how long a client may use its address after the last reply),
// and status.ipv6.validLifetime / longerLeasesUntil play the part of
// status.ipv4.leaseTime / longerLeasesUntil.
func buildIPAM6(pool *v1alpha1.IPPool, now func() time.Time) (*ipam.Pool6, []ipam.Conflict, error) {
	cfg := ipamConfig6(pool.Spec.IPv6Config)
	cfg.Quarantine, cfg.Now = validLifetime(pool), now
	st := pool.Status.IPv6
	if st != nil {
		cfg.LongerLeasesUntil = longerUntil(st.ValidLifetime, st.LongerLeasesUntil, cfg.Quarantine, now())
	}
	am6, err := ipam.New6(cfg)
	if err != nil {
		return nil, nil, err
	}
	if st == nil {
		return am6, nil, nil
	}
	dropped := am6.Restore(st.Allocated)
	am6.RestoreHolders(st.Owners)
	am6.RestoreQuarantine(restoredReleases(st.Released, st.ValidLifetime))
	return am6, dropped, nil
}

// validLifetime is the valid lifetime the pool's agent gives (at most; see
// poolwatch.FromIPPool6): a released IPv6 address may be in use that long
// after the last reply to its client. Lifetimes the agent would not serve
// (refused by the webhook) fall back to the defaults, as in the agent.
func validLifetime(pool *v1alpha1.IPPool) time.Duration {
	pref, valid := pool.Spec.IPv6Config.Lifetimes()
	if pref <= 0 || valid <= 0 || pref > valid {
		valid = v1alpha1.DefaultValidLifetime
	}
	return time.Duration(valid) * time.Second
}

// fillPoolStatus writes both halves' allocations, marks and counts into the
// status. An IPv4-only pool's status is exactly what fillIPv4 made before
// the IPv6 half existed.
func fillPoolStatus(pool *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) {
	if pool.HasIPv4() {
		fillIPv4(pool, am)
	}
	if am6 == nil {
		pool.Status.IPv6 = nil
		return
	}
	fillIPv6(pool, am6)
}

// fillIPv6 is fillIPv4 for status.ipv6. Owners are recorded only where
// the IPv6 half has them (an IPv6-only pool, or a dual-stack allocation
// whose MAC has no IPv4 address; see AllocateDualOp).
func fillIPv6(pool *v1alpha1.IPPool, am6 *ipam.Pool6) {
	st := &v1alpha1.IPv6Status{Allocated: am6.Allocated(), Used: am6.Used(), Available: am6.Available()}
	if h := am6.Holders(); len(h) > 0 {
		st.Owners = h
	}
	vl := int64(am6.Quarantine() / time.Second)
	st.Released = releasedStatus(am6.Quarantined(), vl)
	st.ValidLifetime = &vl
	st.LongerLeasesUntil = longerStatus(am6.LongerLeasesUntil())
	pool.Status.IPv6 = st
}

func ipamConfig6(c *v1alpha1.IPv6Config) ipam.Config6 {
	ex := make([]string, 0, len(c.Pool.Exclude))
	for _, e := range c.Pool.Exclude {
		ex = append(ex, string(e))
	}
	return ipam.Config6{CIDR: c.CIDR, Start: string(c.Pool.Start), End: string(c.Pool.End), ServerIP: string(c.ServerIP), Exclude: ex}
}

// AllocateDualOp gives mac an address in each half of the pool for owner
// (the VMNetCfg's UID), with the rules of AllocateOp per family: the
// requested one, else the one recorded, else one mac released recently,
// else the lowest free one not quarantined (else, reported in the Grant's
// Early, the quarantined one ending first). A family that fails keeps
// nothing for mac (as the op found it) and its error is returned, joined
// with the other's. In an IPv6-only pool the IPv6 half records owner
// (status.ipv6.owners); in a dual-stack pool it records none and follows
// the IPv4 owner check (one owner per NIC, recorded once) unless mac got
// no IPv4 address (then it records owner itself, and checks it): when the IPv4
// half refuses mac because it holds an address for another owner, the IPv6
// half is not touched either, so this NIC is not shown the other
// VMNetCfg's IPv6 address. Run it with DoDualAllocate.
func AllocateDualOp(mac, owner, want4, want6 string, got4, got6 *ipam.Grant) DualOp {
	return func(pool *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) error {
		*got4, *got6 = ipam.Grant{}, ipam.Grant{}
		var err4, err6 error
		switch {
		case am != nil:
			err4 = AllocateOp(mac, owner, want4, got4)(pool, am)
		case want4 != "":
			err4 = fmt.Errorf("allocate %s for %s: %w (IPv6-only)", want4, mac, ErrNoFamily)
		}
		owner6 := owner
		if am != nil && err4 == nil && am6 != nil && holder6Of(am6, mac) == "" {
			// The IPv4 half holds mac's address for owner: the owner is
			// recorded there, once. Without an IPv4 address (the IPv4
			// range full, or none asked for) the IPv6 half records it.
			owner6 = ""
		}
		switch {
		case errors.Is(err4, ipam.ErrHeldByOther):
		case am6 != nil && want6 != "":
			if err6 = am6.AllocateIPFor(want6, mac, owner6); err6 == nil {
				got6.IP, _ = am6.Lookup(mac)
			}
		case am6 != nil:
			*got6, err6 = am6.AllocateFor(mac, owner6)
		case want6 != "":
			err6 = fmt.Errorf("allocate %s for %s: %w (no spec.ipv6Config)", want6, mac, ErrNoFamily)
		}
		return errors.Join(err4, err6)
	}
}

// ReleaseDualOp frees the addresses mac holds for owner; one mac holds
// for another owner (another VMNetCfg with the same MAC) is not this
// release's to free, and is left alone. In a dual-stack pool the IPv6 half
// follows the IPv4 owner: its address is kept when the IPv4 half shows
// that mac holds an address for another VMNetCfg. In an IPv6-only pool the
// IPv6 half checks its own owner.
func ReleaseDualOp(mac, owner string) DualOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) error {
		owner6 := owner
		if am != nil {
			ip4, err := am.ReleaseFor(mac, owner)
			if errors.Is(err, ipam.ErrHeldByOther) {
				return nil
			} else if err != nil {
				return err
			}
			if ip4 != "" && holder6Of(am6, mac) == "" {
				owner6 = "" // the IPv4 owner check passed, and the IPv6 half records none
			}
		}
		if am6 != nil {
			if _, err := am6.ReleaseFor(mac, owner6); err != nil && !errors.Is(err, ipam.ErrHeldByOther) {
				return err
			}
		}
		return nil
	}
}

// holder6Of is the owner the IPv6 half records for mac's address ("" when
// none, or when mac holds none). In a dual-stack pool it records one only
// for an allocation made while mac had no IPv4 address.
func holder6Of(am6 *ipam.Pool6, mac string) string {
	if am6 == nil {
		return ""
	}
	ip, ok := am6.Lookup(mac)
	if !ok {
		return ""
	}
	return am6.Holder(ip)
}

// lookupDualOp finds the addresses mac holds in each half.
func lookupDualOp(mac string, got4, got6 *string) DualOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool, am6 *ipam.Pool6) error {
		*got4, *got6 = "", ""
		if am != nil {
			*got4, _ = am.Lookup(mac)
		}
		if am6 != nil {
			*got6, _ = am6.Lookup(mac)
		}
		return nil
	}
}

// IPAM6 returns the IPv6 half of the pool's IPAM if loaded (read only).
func (s *PoolStore) IPAM6(key types.NamespacedName) (*ipam.Pool6, bool) {
	s.mu.Lock()
	ps := s.pools[key]
	s.mu.Unlock()
	if ps == nil {
		return nil, false
	}
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.am6, ps.am6 != nil
}

// canonicalIPv6 is ip in the form the IPAM records (RFC 5952), or ip as it
// is when it is no address.
func canonicalIPv6(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil {
		return a.String()
	}
	return ip
}

// wantIPv6 is the IPv6 address a NIC asks for, or "".
func wantIPv6(nc v1alpha1.NetworkConfig) string {
	if nc.IPv6Address == nil {
		return ""
	}
	return string(*nc.IPv6Address)
}
