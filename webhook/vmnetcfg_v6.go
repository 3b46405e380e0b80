package webhook

import (
	"context"
	"errors"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// checkIPv6Request checks a NIC's requested IPv6 address against the IPv6
// half of its network's pool, as checkRequestedIP does for IPv4.
func checkIPv6Request(ctx context.Context, lk Lookup, base string, nc v1alpha1.NetworkConfig) (FieldErrors, error) {
	if nc.IPv6Address == nil {
		return nil, nil
	}
	var es FieldErrors
	field, ip := base+".ipv6Address", string(*nc.IPv6Address)
	a, ok := parseIPv6(ip)
	if !ok {
		es.add(field, ip, "is not an IPv6 address")
		return es, nil
	}
	if _, _, ok := checkNetworkName(new(FieldErrors), base+".networkName", nc.NetworkName); !ok {
		return es, nil // reported with the network name
	}
	pools, err := lk.IPPoolsForNetwork(ctx, nc.NetworkName)
	if err != nil || len(pools) == 0 {
		return es, err // a missing pool is reported with the network name
	}
	pool := &pools[0]
	poolName := pool.Namespace + "/" + pool.Name
	c := pool.Spec.IPv6Config
	switch {
	case c == nil:
		es.add(field, ip, "cannot be given: IPPool %s has no spec.ipv6Config", poolName)
		return es, nil
	case sameIPv6(a, string(c.ServerIP)):
		es.add(field, ip, "is the server IP of IPPool %s", poolName)
		return es, nil
	}
	if bad := validateIPPoolV6(pool, Options{}); len(bad) > 0 {
		es.add(field, ip, "cannot be checked: IPPool %s is invalid: %v", poolName, bad[0])
		return es, nil
	}
	p, err := ipam.New6(ipamConfig6(c))
	if err != nil {
		es.add(field, ip, "cannot be checked: IPPool %s is invalid: %v", poolName, err)
		return es, nil
	}
	// A trial allocation on an empty IPAM: in the range and not blocked.
	err = p.AllocateIP(ip, "02:00:00:00:00:01")
	switch {
	case err == nil:
	case errors.Is(err, ipam.ErrOutsidePool):
		es.add(field, ip, "is outside the range %s-%s of IPPool %s", c.Pool.Start, c.Pool.End, poolName)
	case errors.Is(err, ipam.ErrUnavailable):
		if mark, _ := p.Owner(ip); mark == ipam.MarkExcluded {
			es.add(field, ip, "is excluded by IPPool %s", poolName)
		} else {
			es.add(field, ip, "is not available in IPPool %s (%v)", poolName, err)
		}
	default:
		es.add(field, ip, "is not available in IPPool %s (%v)", poolName, err)
	}
	return es, nil
}
