// Package invariants checks, from what the API server holds, that no address
// is lost, doubled or inconsistent: the properties every fault scenario of
// the reliability suite ends by asserting.
package invariants

import (
	"context"
	"fmt"
	"sort"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Violation is one broken invariant.
type Violation struct {
	Kind   string // short name of the invariant
	Object string // namespace/name of the object it concerns
	Detail string
}

func (v Violation) String() string { return fmt.Sprintf("%s: %s: %s", v.Kind, v.Object, v.Detail) }

// Check reads every IPPool and VirtualMachineNetworkConfig and returns the
// violations found, sorted. An empty result means the state is consistent.
func Check(ctx context.Context, c client.Reader) ([]Violation, error) {
	var pools v1alpha1.IPPoolList
	if err := c.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("list ippools: %w", err)
	}
	var cfgs v1alpha1.VirtualMachineNetworkConfigList
	if err := c.List(ctx, &cfgs); err != nil {
		return nil, fmt.Errorf("list vmnetcfgs: %w", err)
	}
	return Evaluate(pools.Items, cfgs.Items), nil
}

// Evaluate is Check on objects already read.
func Evaluate(pools []v1alpha1.IPPool, cfgs []v1alpha1.VirtualMachineNetworkConfig) []Violation {
	var out []Violation
	add := func(kind, obj, format string, args ...any) {
		out = append(out, Violation{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, args...)})
	}

	out = append(out, EvaluateClaims(cfgs)...)

	// What the VMNetCfgs claim: network -> mac -> ip, for entries Allocated,
	// per family (an IPv6 claim is an entry's allocatedIPv6Address).
	claims, claims6 := map[string]map[string]claim{}, map[string]map[string]claim{}
	for i := range cfgs {
		v := &cfgs[i]
		name := v.Namespace + "/" + v.Name
		for _, s := range v.Status.NetworkConfigs {
			if s.State != v1alpha1.StateAllocated {
				continue
			}
			mac := ipam.NormalizeMAC(s.MACAddress)
			addClaim(claims, add, name, s.NetworkName, mac, s.AllocatedIPAddress)
			if s.AllocatedIPv6Address != "" {
				addClaim(claims6, add, name, s.NetworkName, mac, s.AllocatedIPv6Address)
			}
		}
	}

	poolByNetwork := map[string]*v1alpha1.IPPool{}
	for i := range pools {
		p := &pools[i]
		name := p.Namespace + "/" + p.Name
		poolByNetwork[p.Spec.NetworkName] = p
		if p.HasIPv4() {
			var allocated map[string]string
			used, available := 0, 0
			if p.Status.IPv4 != nil {
				allocated, used, available = p.Status.IPv4.Allocated, p.Status.IPv4.Used, p.Status.IPv4.Available
			}
			nMACs := checkHalf(add, name, "", allocated, used, claims[p.Spec.NetworkName])
			if pool, err := ipam.New(ipam.Config{
				CIDR: p.Spec.IPv4Config.CIDR, Start: string(p.Spec.IPv4Config.Pool.Start), End: string(p.Spec.IPv4Config.Pool.End),
				ServerIP: string(p.Spec.IPv4Config.ServerIP), Router: string(p.Spec.IPv4Config.Router), Exclude: toStrings(p.Spec.IPv4Config.Pool.Exclude),
			}); err == nil {
				if want := pool.Available() - nMACs; p.Status.IPv4 != nil && available != want {
					add("counts", name, "available=%d but the range leaves %d", available, want)
				}
			}
		}
		if p.HasIPv6() {
			// status.ipv6.available is capped (a /64 range holds more than an
			// int64): only the used count and the entries are checked.
			var allocated map[string]string
			used := 0
			if p.Status.IPv6 != nil {
				allocated, used = p.Status.IPv6.Allocated, p.Status.IPv6.Used
			}
			checkHalf(add, name, "IPv6 ", allocated, used, claims6[p.Spec.NetworkName])
		}
	}
	for network, macs := range claims {
		if poolByNetwork[network] != nil {
			continue
		}
		for m, c := range macs {
			add("missing-entry", c.owner, "Allocated %s for %s on %s, a network with no IPPool", c.ip, m, network)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// EvaluateClaims checks the VirtualMachineNetworkConfigs alone: no address
// Allocated to two MACs on one network. Unlike the rest of Evaluate it holds
// at every instant, not only once the controller has converged, so the
// reliability tests sample it while faults are injected. Objects being
// deleted are left out: their address may already be released on purpose.
func EvaluateClaims(cfgs []v1alpha1.VirtualMachineNetworkConfig) []Violation {
	var out []Violation
	type holder struct{ mac, owner string }
	byIP := map[string]map[string]holder{} // network -> ip -> holder
	for i := range cfgs {
		v := &cfgs[i]
		if v.DeletionTimestamp != nil {
			continue
		}
		name := v.Namespace + "/" + v.Name
		for _, s := range v.Status.NetworkConfigs {
			if s.State != v1alpha1.StateAllocated {
				continue
			}
			mac := ipam.NormalizeMAC(s.MACAddress)
			if byIP[s.NetworkName] == nil {
				byIP[s.NetworkName] = map[string]holder{}
			}
			// IPv4 and IPv6 addresses never spell alike: one map holds both.
			for _, ip := range []string{s.AllocatedIPAddress, s.AllocatedIPv6Address} {
				if ip == "" {
					continue
				}
				if prev, dup := byIP[s.NetworkName][ip]; dup && prev.mac != mac {
					out = append(out, Violation{Kind: "address-two-macs", Object: name,
						Detail: fmt.Sprintf("%s on %s is Allocated to %s here and to %s in %s", ip, s.NetworkName, mac, prev.mac, prev.owner)})
					continue
				}
				byIP[s.NetworkName][ip] = holder{mac: mac, owner: name}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// claim is an address a VirtualMachineNetworkConfig records as Allocated.
type claim struct{ ip, owner string }

// addClaim records that owner claims ip for mac on network; a MAC claiming
// two addresses of one family is a violation.
func addClaim(claims map[string]map[string]claim, add func(kind, obj, format string, args ...any), owner, network, mac, ip string) {
	if claims[network] == nil {
		claims[network] = map[string]claim{}
	}
	if prev, dup := claims[network][mac]; dup && prev.ip != ip {
		add("mac-two-addresses", owner, "MAC %s on %s holds %s here and %s in %s", mac, network, ip, prev.ip, prev.owner)
	}
	claims[network][mac] = claim{ip: ip, owner: owner}
}

// checkHalf compares one family's allocations of pool name with the claims
// of its network: no MAC with two addresses, no entry without a claim (a
// leak) or with another address than the claim, no claim without an entry,
// used counting the MACs. It returns the number of addresses given to MACs.
func checkHalf(add func(kind, obj, format string, args ...any), name, family string, allocated map[string]string, used int, claims map[string]claim) int {
	// An address maps to one MAC by construction of the map; a MAC must
	// not hold two addresses.
	ipOfMAC := map[string]string{}
	nMACs := 0
	for ip, mac := range allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		nMACs++
		m := ipam.NormalizeMAC(mac)
		if prev, dup := ipOfMAC[m]; dup {
			add("mac-two-addresses", name, "MAC %s holds %s%s and %s", m, family, prev, ip)
		}
		ipOfMAC[m] = ip
		c, ok := claims[m]
		switch {
		case !ok:
			add("leak", name, "%s%s allocated to %s but no VirtualMachineNetworkConfig has it Allocated", family, ip, m)
		case c.ip != ip:
			add("mismatch", name, "%s%s allocated to %s but %s records %s", family, ip, m, c.owner, c.ip)
		}
	}
	for m, c := range claims {
		if _, ok := ipOfMAC[m]; !ok {
			add("missing-entry", c.owner, "Allocated %s%s for %s has no entry in IPPool %s", family, c.ip, m, name)
		}
	}
	if used != nMACs {
		add("counts", name, "%sused=%d but %d addresses are allocated to MACs", family, used, nMACs)
	}
	return nMACs
}

func toStrings(in []v1alpha1.IPv4Address) []string {
	out := make([]string, len(in))
	for i, a := range in {
		out[i] = string(a)
	}
	return out
}
