// Package poolwatch keeps one live, immutable view of an IPPool per process
// for the agent's CoreDHCP plugins: a field-selected list/watch on the one
// IPPool, an optional snapshot file that survives control-plane outages, and
// the registry through which the two plugins share a single watch per pool.
package poolwatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/dnsname"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/wire"
)

// DefaultLeaseTime is offered when spec.ipv4Config.leaseTime is unset.
const DefaultLeaseTime = time.Hour

// Route is one classless static route of a pool.
type Route struct {
	Destination netip.Prefix
	Gateway     netip.Addr
}

// Pool is one immutable view of an IPPool, shaped for the packet path. A Pool
// is never modified after it is published: a change produces a new Pool.
type Pool struct {
	Namespace       string
	Name            string
	ResourceVersion string

	// Subnet is the masked CIDR; invalid when the pool is absent or broken.
	Subnet       netip.Prefix
	ServerIP     netip.Addr
	Router       netip.Addr // invalid when unset
	DNS          []net.IP
	DomainName   string
	DomainSearch []string
	NTP          []string // addresses or host names, as written in the spec
	LeaseTime    time.Duration
	MTU          uint16 // 0 when unset
	Routes       []Route

	// Leases maps a hardware address (raw bytes as a string, so a lookup
	// with string(chaddr) does not allocate) to its static address.
	Leases map[string]netip.Addr

	// FromSnapshot is true when this view was loaded from the snapshot file
	// rather than received from the API server.
	FromSnapshot bool

	// source is what the view was built from, kept to write the snapshot.
	source *v1alpha1.IPPool

	// v6 is the IPv6 half, built from source on first use (pool6.go).
	v6 *v6View
}

// recordedLeaseTime caps the spec's lease time at the one the controller
// last recorded in status.ipv4.leaseTime: a raise takes effect only once the
// controller knows of it, so every lease the agent grants is one the
// controller counts a released address's quarantine from (raised and lowered
// back while the controller is down, the agent never granted the longer one).
// A lowering takes effect at once. Without a recorded lease time (a pool no
// controller has written yet) the spec's is served.
func recordedLeaseTime(ipp *v1alpha1.IPPool, spec time.Duration) time.Duration {
	if ipp.Status.IPv4 == nil {
		return spec
	}
	return capRecorded(spec, ipp.Status.IPv4.LeaseTime)
}

// capRecorded caps spec at a lease time (IPv6: valid lifetime) the
// controller recorded, in seconds; one that is unset, not positive or
// infinite caps nothing.
func capRecorded(spec time.Duration, recorded *int64) time.Duration {
	if recorded == nil || *recorded <= 0 || *recorded >= wire.Infinite {
		return spec
	}
	return min(spec, time.Duration(*recorded)*time.Second)
}

// Lease returns the address allocated to hw, if any.
func (p *Pool) Lease(hw net.HardwareAddr) (netip.Addr, bool) {
	if p == nil {
		return netip.Addr{}, false
	}
	a, ok := p.Leases[string(hw)]
	return a, ok
}

// emptyPool is what is served when the IPPool does not exist: nothing.
func emptyPool(namespace, name string) *Pool {
	return &Pool{Namespace: namespace, Name: name, Leases: map[string]netip.Addr{}, v6: &v6View{}}
}

// FromIPPool builds a Pool from an IPPool. Entries it cannot use (a bad
// address, a bad MAC, an address outside the subnet, a MAC listed twice) are
// skipped and reported in the returned error; the rest of the pool is served.
// Only a broken subnet or server IP makes the whole pool unusable.
func FromIPPool(ipp *v1alpha1.IPPool) (*Pool, error) {
	cfg := ipp.Spec.IPv4Config
	p := emptyPool(ipp.Namespace, ipp.Name)
	p.ResourceVersion = ipp.ResourceVersion
	p.source = ipp.DeepCopy()

	subnet, err := netip.ParsePrefix(cfg.CIDR)
	if err != nil || !subnet.Addr().Is4() {
		return p, fmt.Errorf("pool %s/%s: parse cidr %q: not an IPv4 network", ipp.Namespace, ipp.Name, cfg.CIDR)
	}
	p.Subnet = subnet.Masked()

	var errs []error
	if cfg.ServerIP != "" {
		if a, err := ParseV4(string(cfg.ServerIP)); err != nil {
			errs = append(errs, fmt.Errorf("serverIP: %w", err))
		} else {
			p.ServerIP = a
		}
	}
	if cfg.Router != "" {
		if a, err := ParseV4(string(cfg.Router)); err != nil {
			errs = append(errs, fmt.Errorf("router: %w", err))
		} else {
			p.Router = a
		}
	}
	for _, d := range cfg.DNS {
		a, err := ParseV4(string(d))
		if err != nil {
			errs = append(errs, fmt.Errorf("dns: %w", err))
			continue
		}
		p.DNS = append(p.DNS, a.AsSlice())
	}
	if cfg.DomainName != nil {
		p.DomainName = *cfg.DomainName
	}
	for _, d := range cfg.DomainSearch {
		if err := dnsname.Check(d); err != nil {
			errs = append(errs, fmt.Errorf("domainSearch: %w, left out of option 119", err))
			continue
		}
		p.DomainSearch = append(p.DomainSearch, d)
	}
	p.NTP = append([]string(nil), cfg.NTP...)
	p.LeaseTime = DefaultLeaseTime
	if cfg.LeaseTime != nil {
		switch lt := *cfg.LeaseTime; {
		case int64(lt) >= wire.Infinite:
			// Admission refuses it; a pool stored before gets what DHCP
			// can say: infinite (and no overflow of the Duration).
			p.LeaseTime = wire.Infinite * time.Second
			errs = append(errs, fmt.Errorf("leaseTime %d: does not fit 32 bits, serving an infinite lease", lt))
		case lt > 0:
			p.LeaseTime = time.Duration(lt) * time.Second
		default:
			errs = append(errs, fmt.Errorf("leaseTime %d: must be positive, using %s", *cfg.LeaseTime, DefaultLeaseTime))
		}
	}
	p.LeaseTime = recordedLeaseTime(ipp, p.LeaseTime)
	if cfg.MTU != nil {
		if *cfg.MTU >= 68 && *cfg.MTU <= 65535 {
			p.MTU = uint16(*cfg.MTU)
		} else {
			errs = append(errs, fmt.Errorf("mtu %d: out of range 68-65535", *cfg.MTU))
		}
	}
	for _, r := range cfg.Routes {
		dst, err := netip.ParsePrefix(r.Destination)
		if err != nil || !dst.Addr().Is4() {
			errs = append(errs, fmt.Errorf("route %q: not an IPv4 network", r.Destination))
			continue
		}
		gw, err := ParseV4(string(r.Gateway))
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s gateway: %w", r.Destination, err))
			continue
		}
		p.Routes = append(p.Routes, Route{Destination: dst.Masked(), Gateway: gw})
	}

	if ipp.Status.IPv4 != nil {
		// Walk addresses in order so that a MAC listed twice resolves the
		// same way on every agent: the lowest address wins.
		ips := make([]string, 0, len(ipp.Status.IPv4.Allocated))
		for ip := range ipp.Status.IPv4.Allocated {
			ips = append(ips, ip)
		}
		sort.Slice(ips, func(i, j int) bool {
			a, _ := netip.ParseAddr(ips[i])
			b, _ := netip.ParseAddr(ips[j])
			return a.Less(b)
		})
		for _, ipStr := range ips {
			mac := ipp.Status.IPv4.Allocated[ipStr]
			if mac == v1alpha1.AllocatedExcluded || mac == v1alpha1.AllocatedReserved {
				continue
			}
			addr, err := ParseV4(ipStr)
			if err != nil {
				errs = append(errs, fmt.Errorf("allocated %q: %w", ipStr, err))
				continue
			}
			if !p.Subnet.Contains(addr) {
				errs = append(errs, fmt.Errorf("allocated %s: outside %s", addr, p.Subnet))
				continue
			}
			hw, err := net.ParseMAC(mac)
			if err != nil {
				errs = append(errs, fmt.Errorf("allocated %s: mac %q: %w", addr, mac, err))
				continue
			}
			if prev, dup := p.Leases[string(hw)]; dup {
				errs = append(errs, fmt.Errorf("allocated %s: mac %s already has %s", addr, hw, prev))
				continue
			}
			p.Leases[string(hw)] = addr
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("pool %s/%s: skipped: %w", ipp.Namespace, ipp.Name, errors.Join(errs...))
	}
	return p, nil
}

// ParseV4 reads an IPv4 address of a pool's spec or status as the agent
// does (spaces around it trimmed). The webhook's warnings use it too, so
// that what they say is left out is exactly what the agent leaves out.
func ParseV4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("address %q is not IPv4", s)
	}
	return a, nil
}
