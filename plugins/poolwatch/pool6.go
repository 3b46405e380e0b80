package poolwatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Pool6 is the immutable view of an IPPool's IPv6 half for the DHCPv6 path.
type Pool6 struct {
	Prefix            netip.Prefix // masked; invalid when the pool has no usable IPv6 half
	ServerIP          netip.Addr
	DNS               []net.IP
	DomainSearch      []string
	NTP               []string // IPv6 addresses or host names, as written in the spec
	PreferredLifetime time.Duration
	ValidLifetime     time.Duration
	// SendRA: the agent sends router advertisements for Prefix, at most
	// RAInterval apart (spec.ipv6Config.routerAdvertisements).
	SendRA     bool
	RAInterval time.Duration

	// Leases maps a hardware address (raw bytes as a string) to its address.
	Leases map[string]netip.Addr
	// Owners maps an allocated address to its hardware address, to answer a
	// client that holds an address that is no longer its own.
	Owners map[netip.Addr]string
}

// Lease returns the IPv6 address allocated to hw, if any.
func (p *Pool6) Lease(hw net.HardwareAddr) (netip.Addr, bool) {
	if p == nil {
		return netip.Addr{}, false
	}
	a, ok := p.Leases[string(hw)]
	return a, ok
}

// v6View builds a Pool's IPv6 half once, on first use: the IPv4 path never
// pays for it, and the Pool stays immutable once published.
type v6View struct {
	once sync.Once
	p    *Pool6
	err  error
}

// IPv6 returns the view of the pool's IPv6 half (empty, with an invalid
// Prefix, when the pool has none) and the entries it had to skip.
func (p *Pool) IPv6() (*Pool6, error) {
	if p == nil || p.v6 == nil {
		return emptyPool6(), nil
	}
	p.v6.once.Do(func() { p.v6.p, p.v6.err = FromIPPool6(p.source) })
	return p.v6.p, p.v6.err
}

func emptyPool6() *Pool6 {
	return &Pool6{Leases: map[string]netip.Addr{}, Owners: map[netip.Addr]string{}}
}

// FromIPPool6 builds the view of spec.ipv6Config and status.ipv6. Like
// FromIPPool, entries it cannot use are skipped and reported; the rest is
// served.
func FromIPPool6(ipp *v1alpha1.IPPool) (*Pool6, error) {
	p := emptyPool6()
	if ipp == nil || ipp.Spec.IPv6Config == nil {
		return p, nil
	}
	cfg := ipp.Spec.IPv6Config
	prefix, err := netip.ParsePrefix(cfg.CIDR)
	if err != nil || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return p, fmt.Errorf("pool %s/%s: parse ipv6 cidr %q: not an IPv6 prefix", ipp.Namespace, ipp.Name, cfg.CIDR)
	}
	p.Prefix = prefix.Masked()
	var errs []error
	if a, err := parseV6(string(cfg.ServerIP)); err == nil {
		p.ServerIP = a
	} else if cfg.ServerIP != "" {
		errs = append(errs, fmt.Errorf("ipv6 serverIP: %w", err))
	}
	for _, d := range cfg.DNS {
		a, err := parseV6(string(d))
		if err != nil {
			errs = append(errs, fmt.Errorf("ipv6 dns: %w", err))
			continue
		}
		p.DNS = append(p.DNS, a.AsSlice())
	}
	p.DomainSearch = append([]string(nil), cfg.DomainSearch...)
	p.NTP = append([]string(nil), cfg.NTP...)
	pref, valid := cfg.Lifetimes()
	if pref <= 0 || valid <= 0 || pref > valid {
		errs = append(errs, fmt.Errorf("ipv6 lifetimes %d/%d: using %d/%d", pref, valid, v1alpha1.DefaultPreferredLifetime, v1alpha1.DefaultValidLifetime))
		pref, valid = v1alpha1.DefaultPreferredLifetime, v1alpha1.DefaultValidLifetime
	}
	p.PreferredLifetime, p.ValidLifetime = time.Duration(pref)*time.Second, time.Duration(valid)*time.Second
	if st := ipp.Status.IPv6; st != nil {
		// As recordedLeaseTime for IPv4: a raise of the valid lifetime is
		// served once the controller has recorded it in
		// status.ipv6.validLifetime, the lifetime it quarantines released
		// addresses for; a lowering at once.
		p.ValidLifetime = capRecorded(p.ValidLifetime, st.ValidLifetime)
		p.PreferredLifetime = min(p.PreferredLifetime, p.ValidLifetime)
	}
	if ra := cfg.RouterAdvertisements; ra != nil && ra.Enabled {
		p.SendRA = true
		p.RAInterval = time.Duration(ra.RAInterval()) * time.Second
		if p.RAInterval < 4*time.Second || p.RAInterval > 1800*time.Second {
			errs = append(errs, fmt.Errorf("ipv6 routerAdvertisements.interval %s: out of range 4-1800 s, using %d s", p.RAInterval, v1alpha1.DefaultRAInterval))
			p.RAInterval = v1alpha1.DefaultRAInterval * time.Second
		}
	}

	if ipp.Status.IPv6 != nil {
		// Lowest address first, so a MAC listed twice resolves the same way
		// on every agent (and the same way as the controller's IPAM).
		type entry struct {
			a   netip.Addr
			mac string
		}
		var entries []entry
		for s, mac := range ipp.Status.IPv6.Allocated {
			if mac == v1alpha1.AllocatedExcluded || mac == v1alpha1.AllocatedReserved {
				continue
			}
			a, err := parseV6(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("allocated %q: %w", s, err))
				continue
			}
			entries = append(entries, entry{a, mac})
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].a.Less(entries[j].a) })
		for _, e := range entries {
			if !p.Prefix.Contains(e.a) {
				errs = append(errs, fmt.Errorf("allocated %s: outside %s", e.a, p.Prefix))
				continue
			}
			hw, err := net.ParseMAC(e.mac)
			if err != nil {
				errs = append(errs, fmt.Errorf("allocated %s: mac %q: %w", e.a, e.mac, err))
				continue
			}
			if prev, dup := p.Leases[string(hw)]; dup {
				errs = append(errs, fmt.Errorf("allocated %s: mac %s already has %s", e.a, hw, prev))
				continue
			}
			p.Leases[string(hw)] = e.a
			p.Owners[e.a] = string(hw)
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("pool %s/%s: skipped: %w", ipp.Namespace, ipp.Name, errors.Join(errs...))
	}
	return p, nil
}

func parseV6(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	if !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q is not IPv6", s)
	}
	return a, nil
}
