package webhook

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Options are facts about the cluster that come from flags.
type Options struct {
	// ServiceCIDR and PodCIDR, when valid, are networks no pool may overlap:
	// a VM network that shadows them breaks the cluster's own traffic.
	ServiceCIDR netip.Prefix
	PodCIDR     netip.Prefix
}

// Limits of the pool's DHCP options.
const (
	MinLeaseTime = 60 // seconds; shorter leases make clients renew in a storm
	MinMTU       = 68 // RFC 791's minimum
	MaxMTU       = 65535
	MaxPrefixLen = 30 // a /31 or /32 has no room for a server and a client
	// MinPrefixLen bounds a pool's size: the IPAM keeps a bit per address of
	// the range, and a /0 would overlap every network anyway.
	MinPrefixLen = 8
)

const ipv4Path = "spec.ipv4Config"

// ValidateIPPool decides an admission of an IPPool. For Create and Update
// pool is the new object (old is the stored one on Update); for Delete pool
// is the stored object. It returns the reasons to refuse, or an error when
// the cluster could not be read. It never panics, whatever the object.
func ValidateIPPool(ctx context.Context, lk Lookup, opts Options, op admissionv1.Operation, pool, old *v1alpha1.IPPool) (FieldErrors, error) {
	if pool == nil {
		return FieldErrors{{Field: "object", Reason: "is missing"}}, nil
	}
	switch op {
	case admissionv1.Delete:
		return validateIPPoolDelete(ctx, lk, pool)
	case admissionv1.Update:
		// Metadata-only updates (the controller's finalizers and labels) and
		// updates of a pool being deleted pass: refusing them would wedge a
		// pool stored before the webhook was installed.
		if old != nil && (equality.Semantic.DeepEqual(old.Spec, pool.Spec) || pool.DeletionTimestamp != nil) {
			return nil, nil
		}
		es := ValidateIPPoolSpec(pool, opts)
		if old == nil {
			return es, nil
		}
		// Ratcheting: a rule the stored object already broke (e.g. a pool
		// Harvester admitted) does not block an update that keeps it as it
		// was, such as pausing the pool; only new violations do.
		es = newViolations(es, ValidateIPPoolSpec(old, opts))
		if len(es) == 0 {
			// Loaded by the IPAM, which refuses any config it cannot hold
			// (as it must for what the controller reads from etcd).
			es = strandedAllocations(old, pool)
			es = append(es, strandedAllocationsV6(old, pool)...)
		}
		if len(es) == 0 {
			es = rebuiltStatusFits(old, pool)
		}
		return es, nil
	default:
		es := ValidateIPPoolSpec(pool, opts)
		if len(es) == 0 {
			es = rangeFitsStatus(pool)
		}
		more, err := validateIPPoolNetwork(ctx, lk, pool)
		return append(es, more...), err
	}
}

// rangeFitsStatus refuses, on create, a range whose status could not be
// written once every address is allocated: past etcd's object size every
// status write of the pool would fail. Only on create: start and end are
// immutable, and a pool stored earlier (e.g. by Harvester) must stay
// editable; the controller reports a status that grows too large at run time.
func rangeFitsStatus(pool *v1alpha1.IPPool) FieldErrors {
	start, ok1 := parseIPv4(string(pool.Spec.IPv4Config.Pool.Start))
	end, ok2 := parseIPv4(string(pool.Spec.IPv4Config.Pool.End))
	if !ok1 || !ok2 {
		return nil
	}
	s, e := start.As4(), end.As4()
	n := uint64(binary.BigEndian.Uint32(e[:])) - uint64(binary.BigEndian.Uint32(s[:])) + 1
	if n <= ipam.MaxStatusAddresses {
		return nil
	}
	var es FieldErrors
	es.add(ipv4Path+".pool.end", string(pool.Spec.IPv4Config.Pool.End),
		"makes a range of %d addresses (%s-%s); a pool may have at most %d (a /18), or its status no longer fits in etcd once they are allocated: use a smaller range, or several pools on several networks",
		n, start, end, ipam.MaxStatusAddresses)
	return es
}

// rebuiltStatusFits refuses a spec update after which the controller's
// rebuilt status would not fit in etcd: each allocation the new spec drops
// (an exclude on a paused pool) becomes an EXCLUDED mark plus a quarantine
// entry, larger than the allocation, and past the limit every status write
// of the pool fails, releases included. An update that does not grow an
// already too large pool passes, so it can always be undone.
func rebuiltStatusFits(old, pool *v1alpha1.IPPool) FieldErrors {
	has4 := old.Status.IPv4 != nil && len(old.Status.IPv4.Allocated) > 0
	has6 := old.Status.IPv6 != nil && len(old.Status.IPv6.Allocated) > 0
	if !has4 && !has6 { // nothing to drop in either half
		return nil
	}
	size, err := controller.RebuiltObjectBytes(old, pool, time.Now())
	if err != nil || size <= ipam.MaxObjectBytes {
		return nil // a spec the IPAM refuses is reported by ValidateIPPoolSpec
	}
	if b, err := json.Marshal(old); err == nil && size <= len(b) {
		return nil
	}
	// Each half names its own field with the number of addresses it drops.
	const msg = "takes away %d allocated addresses: the pool's rebuilt status would be %d bytes, over etcd's %d-byte limit, and every status write of the pool (releases included) would fail: exclude fewer addresses at a time, or release them first"
	var es FieldErrors
	if has4 && pool.HasIPv4() {
		if am, err := ipam.New(ipamConfig(pool)); err == nil {
			if dropped := len(am.Restore(old.Status.IPv4.Allocated)); dropped > 0 {
				es.add(ipv4Path+".pool", "", msg, dropped, size, ipam.MaxObjectBytes)
			}
		}
	}
	if has6 && pool.Spec.IPv6Config != nil {
		if am, err := ipam.New6(ipamConfig6(pool.Spec.IPv6Config)); err == nil {
			if dropped := len(am.Restore(old.Status.IPv6.Allocated)); dropped > 0 {
				es.add(ipv6Path+".pool", "", msg, dropped, size, ipam.MaxObjectBytes)
			}
		}
	}
	if len(es) == 0 { // grown for another reason (a half removed on a paused pool)
		es.add("spec", "", "grows the pool's rebuilt status to %d bytes, over etcd's %d-byte limit, and every status write of the pool (releases included) would fail: make the change in smaller steps",
			size, ipam.MaxObjectBytes)
	}
	return es
}

// ValidateIPPoolSpec checks what can be checked of an IPPool without the
// cluster: addresses, ranges and options.
func ValidateIPPoolSpec(pool *v1alpha1.IPPool, opts Options) FieldErrors {
	var es FieldErrors
	checkNetworkName(&es, "spec.networkName", pool.Network())
	if !pool.HasIPv4() { // IPv6-only pool
		return append(es, validateIPPoolV6(pool, opts)...)
	}
	c := pool.Spec.IPv4Config

	cidr, cidrOK := parseIPv4Prefix(c.CIDR)
	switch {
	case c.CIDR == "":
		es.add(ipv4Path+".cidr", "", "is required, e.g. 192.168.100.0/24")
	case !cidrOK:
		es.add(ipv4Path+".cidr", c.CIDR, "is not an IPv4 network such as 192.168.100.0/24")
	case cidr.Bits() > MaxPrefixLen:
		es.add(ipv4Path+".cidr", c.CIDR, "has a prefix longer than /%d: no room for a server and clients", MaxPrefixLen)
		cidrOK = false
	case cidr.Bits() < MinPrefixLen:
		es.add(ipv4Path+".cidr", c.CIDR, "has a prefix shorter than /%d", MinPrefixLen)
		cidrOK = false
	default:
		for _, other := range []struct {
			name   string
			prefix netip.Prefix
		}{{"service CIDR", opts.ServiceCIDR}, {"pod CIDR", opts.PodCIDR}} {
			if other.prefix.IsValid() && cidr.Overlaps(other.prefix) {
				es.add(ipv4Path+".cidr", c.CIDR, "overlaps the cluster's %s %s", other.name, other.prefix)
			}
		}
	}

	var server, router netip.Addr
	serverOK, routerOK := false, false
	if c.ServerIP == "" {
		es.add(ipv4Path+".serverIP", "", "is required (the webhook fills it in on create when the cidr is valid)")
	} else {
		server, serverOK = checkHostIn(&es, ipv4Path+".serverIP", string(c.ServerIP), cidr, cidrOK)
	}
	if c.Router != "" {
		router, routerOK = checkHostIn(&es, ipv4Path+".router", string(c.Router), cidr, cidrOK)
	}
	if serverOK && routerOK && server == router {
		es.add(ipv4Path+".serverIP", string(c.ServerIP), "is the same address as spec.ipv4Config.router")
	}

	var start, end netip.Addr
	startOK, endOK := false, false
	for _, f := range []struct {
		name  string
		value v1alpha1.IPv4Address
		out   *netip.Addr
		ok    *bool
	}{{"start", c.Pool.Start, &start, &startOK}, {"end", c.Pool.End, &end, &endOK}} {
		if f.value == "" {
			es.add(ipv4Path+".pool."+f.name, "", "is required (the webhook fills it in on create when the cidr is valid)")
			continue
		}
		*f.out, *f.ok = checkHostIn(&es, ipv4Path+".pool."+f.name, string(f.value), cidr, cidrOK)
	}
	rangeOK := startOK && endOK
	if rangeOK && start.Compare(end) > 0 {
		es.add(ipv4Path+".pool.start", string(c.Pool.Start), "is after spec.ipv4Config.pool.end %s", c.Pool.End)
		rangeOK = false
	}

	// Exclude entries are never refused: listed twice, outside the range,
	// or no address at all (Harvester admits any string and its IPAM
	// ignores it) is harmless; IPPoolWarnings says so, the IPAM skips it.

	for i, d := range c.DNS {
		field := fmt.Sprintf("%s.dns[%d]", ipv4Path, i)
		// Read as the agent reads it (spaces trimmed): what it sends is checked.
		a, err := poolwatch.ParseV4(d)
		switch {
		case err != nil:
			// Harvester's schema admits it; the agent leaves it out of
			// option 6 and IPPoolWarnings says so.
		case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			es.add(field, d, "is not a unicast address")
		// A DNS server may live outside the pool's network (1.1.1.1 in
		// Harvester's own example), but never on its network or broadcast address.
		case cidrOK && cidr.Contains(a) && hostRole(cidr, a) != "":
			es.add(field, d, "%s", hostRole(cidr, a))
		}
	}

	// domainName, domainSearch and ntp entries the agent cannot send, and
	// lease times DHCP cannot say, are Harvester's to admit: IPPoolWarnings
	// says what the agent does with them.
	if c.MTU != nil && (*c.MTU < MinMTU || *c.MTU > MaxMTU) {
		es.add(ipv4Path+".mtu", strconv.Itoa(*c.MTU), "is outside %d-%d", MinMTU, MaxMTU)
	}

	for i, r := range c.Routes {
		field := fmt.Sprintf("%s.routes[%d]", ipv4Path, i)
		dst, ok := parseIPv4Prefix(r.Destination)
		switch {
		case !ok:
			es.add(field+".destination", r.Destination, "is not an IPv4 network such as 10.10.0.0/16")
		case dst.Masked() != dst:
			// Option 121 sends only the significant octets: host bits would be lost.
			es.add(field+".destination", r.Destination, "has host bits set (did you mean %s?)", dst.Masked())
		}
		if r.Gateway == "" {
			es.add(field+".gateway", "", "is required")
			continue
		}
		checkHostIn(&es, field+".gateway", string(r.Gateway), cidr, cidrOK)
	}
	es = append(es, validateIPPoolV6(pool, opts)...)
	return append(es, validateWireLimits(pool)...)
}

// validateIPPoolNetwork checks on create that the pool's network exists.
func validateIPPoolNetwork(ctx context.Context, lk Lookup, pool *v1alpha1.IPPool) (FieldErrors, error) {
	var es FieldErrors
	ns, name, ok := checkNetworkName(new(FieldErrors), "spec.networkName", pool.Network())
	if !ok {
		return nil, nil // already reported by ValidateIPPoolSpec
	}
	exists, err := lk.NADExists(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if !exists {
		es.add("spec.networkName", pool.Spec.NetworkName, "names no NetworkAttachmentDefinition (no such NetworkAttachmentDefinition %s in namespace %s)", name, ns)
	}
	// A second pool on the network is admitted with a warning
	// (ipPoolWarnings), as Harvester admits it; the controller keeps it
	// unregistered while the first one exists.
	return es, nil
}

// validateIPPoolDelete refuses to delete a pool whose network still has VMs
// configured. The VMNetCfg names the NAD (nadNamespace/nadName), which may
// live in another namespace than the pool: match on the pool's
// spec.networkName, never on the pool's own namespace.
func validateIPPoolDelete(ctx context.Context, lk Lookup, pool *v1alpha1.IPPool) (FieldErrors, error) {
	if pool.Spec.NetworkName == "" {
		return nil, nil
	}
	users, err := lk.VMNetCfgsForNetwork(ctx, pool.Network())
	if err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(users))
	for _, u := range users {
		names = append(names, u.Namespace+"/"+u.Name)
	}
	slices.Sort(names)
	shown := names
	if len(shown) > 3 {
		shown = append(slices.Clone(shown[:3]), fmt.Sprintf("and %d more", len(names)-3))
	}
	var es FieldErrors
	es.add("spec.networkName", pool.Spec.NetworkName,
		"is still used by VirtualMachineNetworkConfig %s: remove those VMs' network configs before deleting the pool",
		strings.Join(shown, ", "))
	return es, nil
}

// ipamConfig is the part of a pool the IPAM needs.
func ipamConfig(pool *v1alpha1.IPPool) ipam.Config {
	c := pool.Spec.IPv4Config
	ex := make([]string, len(c.Pool.Exclude))
	for i, e := range c.Pool.Exclude {
		ex[i] = string(e)
	}
	return ipam.Config{CIDR: c.CIDR, Start: string(c.Pool.Start), End: string(c.Pool.End),
		ServerIP: string(c.ServerIP), Router: string(c.Router), Exclude: ex}
}

// strandedAllocations finds addresses allocated to a MAC under the old spec
// that the new spec would exclude, reserve or leave outside the range. The
// IPAM decides: an allocation the new IPAM cannot restore is stranded.
// Allocations that the old spec could not hold either are not blamed on
// this update. A paused pool may change freely: its agent is stopped.
func strandedAllocations(old, pool *v1alpha1.IPPool) FieldErrors {
	if pool.IsPaused() || old.Status.IPv4 == nil || len(old.Status.IPv4.Allocated) == 0 {
		return nil
	}
	newIPAM, err := ipam.New(ipamConfig(pool))
	if err != nil {
		return nil // the spec's own errors are reported by ValidateIPPoolSpec
	}
	alloc := old.Status.IPv4.Allocated
	before := map[string]bool{}
	if oldIPAM, err := ipam.New(ipamConfig(old)); err == nil {
		for _, c := range oldIPAM.Restore(alloc) {
			before[c.IP] = true
		}
	}
	conflicts := newIPAM.Restore(alloc)
	slices.SortFunc(conflicts, func(a, b ipam.Conflict) int { return cmp.Compare(a.IP, b.IP) })
	c := pool.Spec.IPv4Config
	var es FieldErrors
	for _, k := range conflicts {
		if before[k.IP] || !(errors.Is(k.Err, ipam.ErrOutsidePool) || errors.Is(k.Err, ipam.ErrUnavailable)) {
			continue
		}
		field := ipv4Path + ".pool"
		switch {
		case k.IP == string(c.ServerIP):
			field = ipv4Path + ".serverIP"
		case k.IP == string(c.Router):
			field = ipv4Path + ".router"
		case slices.ContainsFunc(c.Pool.Exclude, func(e v1alpha1.IPv4Address) bool {
			a, ok := ipam.ParseIPv4(string(e))
			return ok && a.String() == k.IP
		}):
			field = ipv4Path + ".pool.exclude"
		}
		es.add(field, k.IP, "is allocated to MAC %s: set spec.paused: true before a change that takes it away", k.MAC)
	}
	return es
}

// DefaultIPPool fills spec.ipv4Config.pool.start (first host of the CIDR),
// pool.end (last host before broadcast) and serverIP (first host that is not
// the router, excluded or allocated) when they are empty. It never changes a
// field that is set, and does nothing when the CIDR is unusable (validation
// then reports it). It returns the paths of the fields it filled.
func DefaultIPPool(pool *v1alpha1.IPPool) []string {
	c := &pool.Spec.IPv4Config
	prefix, ok := parseIPv4Prefix(c.CIDR)
	if !ok || prefix.Bits() > MaxPrefixLen {
		return nil
	}
	prefix = prefix.Masked()
	first, last := prefix.Addr().Next(), broadcastOf(prefix).Prev()
	var filled []string
	if c.Pool.Start == "" {
		c.Pool.Start = v1alpha1.IPv4Address(first.String())
		filled = append(filled, ipv4Path+".pool.start")
	}
	if c.Pool.End == "" {
		c.Pool.End = v1alpha1.IPv4Address(last.String())
		filled = append(filled, ipv4Path+".pool.end")
	}
	if c.ServerIP == "" {
		taken := map[string]bool{string(c.Router): true}
		for _, e := range c.Pool.Exclude {
			if a, ok := ipam.ParseIPv4(string(e)); ok {
				taken[a.String()] = true
			}
		}
		if pool.Status.IPv4 != nil {
			for ip := range pool.Status.IPv4.Allocated {
				taken[ip] = true
			}
		}
		// The loop ends after at most len(taken)+1 steps, whatever the prefix.
		for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
			if !taken[a.String()] {
				c.ServerIP = v1alpha1.IPv4Address(a.String())
				filled = append(filled, ipv4Path+".serverIP")
				break
			}
		}
	}
	return filled
}
