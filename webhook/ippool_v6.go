package webhook

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

const ipv6Path = "spec.ipv6Config"

// MaxIPv6PrefixLen leaves room for the Subnet-Router anycast address, a
// server and two clients (a /126). The shortest prefix is the IPAM's bound,
// ipam.MinIPv6PrefixBits (a /64, the size SLAAC and most networks use).
const MaxIPv6PrefixLen = 126

// parseIPv6 parses an IPv6 address. IPv4-mapped forms (::ffff:1.2.3.4) and
// zones (fe80::1%eth0) are refused: DHCPv6 options carry plain 16 bytes.
func parseIPv6(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

func parseIPv6Prefix(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, false
	}
	return p, true
}

// hostRole6 says why an address of a prefix cannot be given to a host, or "".
func hostRole6(p netip.Prefix, a netip.Addr) string {
	if a == p.Masked().Addr() {
		return "is the Subnet-Router anycast address of " + p.Masked().String()
	}
	return ""
}

// checkHostIn6 validates an address field that must be a usable host of the
// pool's IPv6 prefix.
func checkHostIn6(es *FieldErrors, field, value string, cidr netip.Prefix, cidrOK bool) (netip.Addr, bool) {
	a, ok := parseIPv6(value)
	if !ok {
		es.add(field, value, "is not an IPv6 address")
		return netip.Addr{}, false
	}
	if !cidrOK {
		return a, true
	}
	if !cidr.Contains(a) {
		es.add(field, value, "is outside spec.ipv6Config.cidr %s", cidr.Masked())
		return a, false
	}
	if role := hostRole6(cidr, a); role != "" {
		es.add(field, value, "%s", role)
		return a, false
	}
	return a, true
}

// validateIPPoolV6 checks spec.ipv6Config as thoroughly as the IPv4 half.
func validateIPPoolV6(pool *v1alpha1.IPPool, opts Options) FieldErrors {
	c := pool.Spec.IPv6Config
	if c == nil {
		return nil
	}
	var es FieldErrors
	cidr, cidrOK := parseIPv6Prefix(c.CIDR)
	switch {
	case c.CIDR == "":
		es.add(ipv6Path+".cidr", "", "is required, e.g. fd00:100::/64")
	case !cidrOK:
		es.add(ipv6Path+".cidr", c.CIDR, "is not an IPv6 prefix such as fd00:100::/64")
	case cidr.Bits() < ipam.MinIPv6PrefixBits:
		es.add(ipv6Path+".cidr", c.CIDR, "has a prefix shorter than /%d", ipam.MinIPv6PrefixBits)
		cidrOK = false
	case cidr.Bits() > MaxIPv6PrefixLen:
		es.add(ipv6Path+".cidr", c.CIDR, "has a prefix longer than /%d: no room for a server and clients", MaxIPv6PrefixLen)
		cidrOK = false
	case !cidr.Addr().IsGlobalUnicast() || cidr.Addr().IsLinkLocalUnicast():
		// Link-local, multicast, loopback and unspecified prefixes cannot
		// be a VM network's addresses.
		es.add(ipv6Path+".cidr", c.CIDR, "is not a global or unique local unicast prefix")
		cidrOK = false
	default:
		for _, other := range []struct {
			name   string
			prefix netip.Prefix
		}{{"service CIDR", opts.ServiceCIDR}, {"pod CIDR", opts.PodCIDR}} {
			if other.prefix.IsValid() && cidr.Overlaps(other.prefix) {
				es.add(ipv6Path+".cidr", c.CIDR, "overlaps the cluster's %s %s", other.name, other.prefix)
			}
		}
	}

	if c.ServerIP == "" {
		es.add(ipv6Path+".serverIP", "", "is required (the webhook fills it in on create when the cidr is valid)")
	} else {
		checkHostIn6(&es, ipv6Path+".serverIP", string(c.ServerIP), cidr, cidrOK)
	}

	var start, end netip.Addr
	startOK, endOK := false, false
	for _, f := range []struct {
		name  string
		value v1alpha1.IPv6Address
		out   *netip.Addr
		ok    *bool
	}{{"start", c.Pool.Start, &start, &startOK}, {"end", c.Pool.End, &end, &endOK}} {
		if f.value == "" {
			es.add(ipv6Path+".pool."+f.name, "", "is required (the webhook fills it in on create when the cidr is valid)")
			continue
		}
		*f.out, *f.ok = checkHostIn6(&es, ipv6Path+".pool."+f.name, string(f.value), cidr, cidrOK)
	}
	rangeOK := startOK && endOK
	if rangeOK && start.Compare(end) > 0 {
		es.add(ipv6Path+".pool.start", string(c.Pool.Start), "is after spec.ipv6Config.pool.end %s", c.Pool.End)
		rangeOK = false
	}

	seen := map[netip.Addr]bool{}
	for i, e := range c.Pool.Exclude {
		field := fmt.Sprintf("%s.pool.exclude[%d]", ipv6Path, i)
		a, ok := parseIPv6(string(e))
		switch {
		case !ok:
			es.add(field, string(e), "is not an IPv6 address")
		case seen[a]:
			es.add(field, string(e), "is listed twice")
		case rangeOK && (a.Less(start) || end.Less(a)):
			es.add(field, string(e), "is outside the range %s-%s", start, end)
		}
		if ok {
			seen[a] = true
		}
	}

	for i, d := range c.DNS {
		field := fmt.Sprintf("%s.dns[%d]", ipv6Path, i)
		a, ok := parseIPv6(string(d))
		switch {
		case !ok:
			es.add(field, string(d), "is not an IPv6 address")
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			es.add(field, string(d), "is not a unicast address a guest can reach")
		// Like IPv4, a DNS server may live outside the pool's prefix, but
		// never on its Subnet-Router anycast address.
		case cidrOK && cidr.Contains(a) && hostRole6(cidr, a) != "":
			es.add(field, string(d), "%s", hostRole6(cidr, a))
		}
	}
	for i, d := range c.DomainSearch {
		checkDomainName(&es, fmt.Sprintf("%s.domainSearch[%d]", ipv6Path, i), d)
	}
	for i, n := range c.NTP {
		field := fmt.Sprintf("%s.ntp[%d]", ipv6Path, i)
		if a, err := netip.ParseAddr(n); err == nil {
			// Option 56 carries IPv6 addresses (suboption 1) or names (3).
			if _, ok := parseIPv6(n); !ok || a.IsUnspecified() || a.IsLoopback() {
				es.add(field, n, "is not an IPv6 unicast address (option 56 carries IPv6 addresses or host names)")
			}
			continue
		}
		checkDomainName(&es, field, n)
	}

	for _, l := range []struct {
		name string
		v    *int
	}{{"preferredLifetime", c.PreferredLifetime}, {"validLifetime", c.ValidLifetime}} {
		if l.v == nil {
			continue
		}
		switch {
		case *l.v < MinLeaseTime:
			es.add(ipv6Path+"."+l.name, strconv.Itoa(*l.v), "is shorter than %d seconds", MinLeaseTime)
		case int64(*l.v) >= math.MaxUint32: // 0xffffffff means "infinity" in DHCPv6
			es.add(ipv6Path+"."+l.name, strconv.Itoa(*l.v), "is longer than %d seconds", uint32(math.MaxUint32-1))
		}
	}
	if c.PreferredLifetime != nil && c.ValidLifetime != nil && *c.PreferredLifetime > *c.ValidLifetime {
		// RFC 8415 section 21.6: a client discards an address whose
		// preferred lifetime is greater than its valid lifetime.
		es.add(ipv6Path+".preferredLifetime", strconv.Itoa(*c.PreferredLifetime), "is longer than spec.ipv6Config.validLifetime %d", *c.ValidLifetime)
	}
	return es
}

// ipamConfig6 is the part of a pool's IPv6 half the IPAM needs.
func ipamConfig6(c *v1alpha1.IPv6Config) ipam.Config6 {
	ex := make([]string, len(c.Pool.Exclude))
	for i, e := range c.Pool.Exclude {
		ex[i] = string(e)
	}
	return ipam.Config6{CIDR: c.CIDR, Start: string(c.Pool.Start), End: string(c.Pool.End), ServerIP: string(c.ServerIP), Exclude: ex}
}

// strandedAllocationsV6 is strandedAllocations for the IPv6 half: an update
// that would exclude, reserve, leave outside the range or drop (by removing
// spec.ipv6Config) an address allocated to a MAC is refused unless the pool
// is paused.
func strandedAllocationsV6(old, pool *v1alpha1.IPPool) FieldErrors {
	if pool.IsPaused() {
		return nil
	}
	// Dropping the IPv4 half of a dual-stack pool strands its IPv4
	// allocations the same way (strandedAllocations cannot see it: the new
	// spec builds no IPv4 IPAM).
	if old.HasIPv4() && !pool.HasIPv4() && old.Status.IPv4 != nil {
		n := 0
		for _, mac := range old.Status.IPv4.Allocated {
			if mac != ipam.MarkExcluded && mac != ipam.MarkReserved {
				n++
			}
		}
		if n > 0 {
			var es FieldErrors
			es.add(ipv4Path, "", "cannot be removed while %d IPv4 addresses are allocated: set spec.paused: true first", n)
			return es
		}
	}
	if old.Status.IPv6 == nil || old.Spec.IPv6Config == nil {
		return nil
	}
	alloc := map[string]string{}
	for ip, mac := range old.Status.IPv6.Allocated {
		if mac != ipam.MarkExcluded && mac != ipam.MarkReserved {
			alloc[ip] = mac
		}
	}
	if len(alloc) == 0 {
		return nil
	}
	var es FieldErrors
	if pool.Spec.IPv6Config == nil {
		es.add(ipv6Path, "", "cannot be removed while %d IPv6 addresses are allocated: set spec.paused: true first", len(alloc))
		return es
	}
	if len(validateIPPoolV6(old, Options{})) > 0 {
		return nil
	}
	newIPAM, err := ipam.New6(ipamConfig6(pool.Spec.IPv6Config))
	if err != nil {
		return nil // reported by validateIPPoolV6
	}
	before := map[string]bool{}
	if oldIPAM, err := ipam.New6(ipamConfig6(old.Spec.IPv6Config)); err == nil {
		for _, c := range oldIPAM.Restore(alloc) {
			before[c.IP] = true
		}
	}
	conflicts := newIPAM.Restore(alloc)
	slices.SortFunc(conflicts, func(a, b ipam.Conflict) int { return cmp.Compare(a.IP, b.IP) })
	c := pool.Spec.IPv6Config
	for _, k := range conflicts {
		if before[k.IP] || !(errors.Is(k.Err, ipam.ErrOutsidePool) || errors.Is(k.Err, ipam.ErrUnavailable)) {
			continue
		}
		field := ipv6Path + ".pool"
		a, _ := parseIPv6(k.IP)
		switch {
		case sameIPv6(a, string(c.ServerIP)):
			field = ipv6Path + ".serverIP"
		case slices.ContainsFunc(c.Pool.Exclude, func(e v1alpha1.IPv6Address) bool { return sameIPv6(a, string(e)) }):
			field = ipv6Path + ".pool.exclude"
		}
		es.add(field, k.IP, "is allocated to MAC %s: set spec.paused: true before a change that takes it away", k.MAC)
	}
	return es
}

// sameIPv6 compares an address with one written in any IPv6 spelling.
func sameIPv6(a netip.Addr, s string) bool {
	b, ok := parseIPv6(s)
	return ok && a == b
}

// DefaultIPPoolV6 fills spec.ipv6Config.pool.start (the first address after
// the Subnet-Router anycast address), pool.end (the last address of the
// prefix) and serverIP (the first address that is not excluded or
// allocated) when they are empty, like DefaultIPPool does for IPv4. It
// returns the paths of the fields it filled.
func DefaultIPPoolV6(pool *v1alpha1.IPPool) []string {
	c := pool.Spec.IPv6Config
	if c == nil {
		return nil
	}
	prefix, ok := parseIPv6Prefix(c.CIDR)
	if !ok || prefix.Bits() < ipam.MinIPv6PrefixBits || prefix.Bits() > MaxIPv6PrefixLen {
		return nil
	}
	prefix = prefix.Masked()
	first := prefix.Addr().Next()
	b := prefix.Addr().As16()
	for i := prefix.Bits(); i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	last := netip.AddrFrom16(b)
	var filled []string
	if c.Pool.Start == "" {
		c.Pool.Start = v1alpha1.IPv6Address(first.String())
		filled = append(filled, ipv6Path+".pool.start")
	}
	if c.Pool.End == "" {
		c.Pool.End = v1alpha1.IPv6Address(last.String())
		filled = append(filled, ipv6Path+".pool.end")
	}
	if c.ServerIP == "" {
		taken := map[netip.Addr]bool{}
		for _, e := range c.Pool.Exclude {
			if a, ok := parseIPv6(string(e)); ok {
				taken[a] = true
			}
		}
		if pool.Status.IPv6 != nil {
			for ip := range pool.Status.IPv6.Allocated {
				if a, ok := parseIPv6(ip); ok {
					taken[a] = true
				}
			}
		}
		// Ends after at most len(taken)+1 steps, whatever the prefix.
		for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
			if !taken[a] {
				c.ServerIP = v1alpha1.IPv6Address(a.String())
				filled = append(filled, ipv6Path+".serverIP")
				break
			}
		}
	}
	return filled
}

// defaultPathsV6 maps the paths DefaultIPPoolV6 fills to their JSON keys and
// filled values, for the mutating handler's patch.
func defaultPathsV6(pool *v1alpha1.IPPool) (values map[string]string, keys map[string][]string) {
	c := pool.Spec.IPv6Config
	if c == nil {
		return nil, nil
	}
	return map[string]string{
			ipv6Path + ".pool.start": string(c.Pool.Start),
			ipv6Path + ".pool.end":   string(c.Pool.End),
			ipv6Path + ".serverIP":   string(c.ServerIP),
		}, map[string][]string{
			ipv6Path + ".pool.start": {"spec", "ipv6Config", "pool", "start"},
			ipv6Path + ".pool.end":   {"spec", "ipv6Config", "pool", "end"},
			ipv6Path + ".serverIP":   {"spec", "ipv6Config", "serverIP"},
		}
}

// checkDomainName refuses a domain of the IPv6 half that options 24 and 56
// cannot carry. The IPv6 half is vm-dhcp's own API (Harvester has none to
// stay compatible with), so it refuses instead of warning like the IPv4
// half's options.
func checkDomainName(es *FieldErrors, field, value string) {
	d := strings.TrimSuffix(strings.ToLower(value), ".")
	if d == "" {
		es.add(field, value, "is not a domain name")
		return
	}
	if msgs := validation.IsDNS1123Subdomain(d); len(msgs) > 0 {
		es.add(field, value, "is not a domain name: %s", msgs[0])
	}
}
