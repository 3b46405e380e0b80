package webhook

import (
	"context"
	"errors"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// ValidateVMNetCfg decides the admission (Create or Update) of a
// VirtualMachineNetworkConfig; old is the stored object on Update (may be
// nil). It returns the reasons to refuse, or an error when the cluster could
// not be read. It never panics, whatever the object.
func ValidateVMNetCfg(ctx context.Context, lk Lookup, op admissionv1.Operation, cfg, old *v1alpha1.VirtualMachineNetworkConfig) (FieldErrors, error) {
	if cfg == nil {
		return FieldErrors{{Field: "object", Reason: "is missing"}}, nil
	}
	if op == admissionv1.Delete {
		return nil, nil
	}
	// Metadata-only updates (finalizers) and updates during deletion pass,
	// so an object stored before the webhook was installed never wedges.
	if op == admissionv1.Update && old != nil &&
		(equality.Semantic.DeepEqual(old.Spec, cfg.Spec) || cfg.DeletionTimestamp != nil) {
		return nil, nil
	}
	es, err := validateVMNetCfgSpec(ctx, lk, cfg)
	if err != nil || op != admissionv1.Update || old == nil {
		return es, err
	}
	// Ratcheting, as for IPPools: only violations the stored object did
	// not have refuse an update (pausing a migrated VMNetCfg must pass).
	before, err := validateVMNetCfgSpec(ctx, lk, old)
	if err != nil {
		return nil, err
	}
	return newViolations(es, before), nil
}

// validateVMNetCfgSpec checks cfg's spec, against the cluster's pools and
// the other VMNetCfgs.
func validateVMNetCfgSpec(ctx context.Context, lk Lookup, cfg *v1alpha1.VirtualMachineNetworkConfig) (FieldErrors, error) {
	var es FieldErrors
	if cfg.Spec.VMName == "" {
		es.add("spec.vmName", "", "is required")
	}
	// A MAC twice on one network is refused (one pool, one IPAM keyed by
	// MAC); on two networks it is served by two pools, as in Harvester.
	type netMAC struct{ network, mac string }
	macSeen := map[netMAC]bool{}
	for i, nc := range cfg.Spec.NetworkConfigs {
		base := fmt.Sprintf("spec.networkConfigs[%d]", i)
		mac := ""
		if hw, err := parseUnicastMAC(nc.MACAddress); err != nil {
			es.add(base+".macAddress", nc.MACAddress, "%s", err)
		} else {
			mac = hw.String()
			k := netMAC{vmNetwork(nc.NetworkName, cfg.Namespace), mac}
			if macSeen[k] {
				// No index in the reason: ratcheting compares reasons, and
				// an index shifts when NICs are added or removed.
				es.add(base+".macAddress", nc.MACAddress, "is used by another NIC on network %s", k.network)
			} else {
				macSeen[k] = true
			}
		}

		var ip string
		if nc.IPAddress != nil {
			// An IPv4-mapped form is read as its IPv4 address, as the
			// controller (and Harvester) read it.
			if a, ok := ipam.ParseIPv4(string(*nc.IPAddress)); ok {
				ip = a.String()
			} else {
				es.add(base+".ipAddress", string(*nc.IPAddress), "is not an IPv4 address")
			}
		}

		network := vmNetwork(nc.NetworkName, cfg.Namespace)
		if _, _, ok := checkNetworkName(&es, base+".networkName", network); !ok {
			continue
		}
		more, err := checkNetworkConfig(ctx, lk, cfg, base, network, mac, ip)
		if err != nil {
			return nil, err
		}
		es = append(es, more...)
		more, err = checkIPv6Request(ctx, lk, base, nc)
		if err != nil {
			return nil, err
		}
		es = append(es, more...)
	}
	return es, nil
}

// checkNetworkConfig checks one NIC against its network's pool and the other
// VMs on that network.
func checkNetworkConfig(ctx context.Context, lk Lookup, cfg *v1alpha1.VirtualMachineNetworkConfig, base, network, mac, ip string) (FieldErrors, error) {
	var es FieldErrors
	pools, err := lk.IPPoolsForNetwork(ctx, network)
	if err != nil {
		return nil, err
	}
	if len(pools) == 0 {
		es.add(base+".networkName", network, "has no IPPool: create an IPPool with spec.networkName %s first", network)
	} else if ip != "" {
		checkRequestedIP(&es, base+".ipAddress", ip, &pools[0])
	}

	if mac == "" {
		return es, nil
	}
	others, err := lk.VMNetCfgsForNetwork(ctx, network)
	if err != nil {
		return nil, err
	}
	for _, o := range others {
		if o.Namespace == cfg.Namespace && o.Name == cfg.Name {
			continue
		}
		for _, onc := range o.Spec.NetworkConfigs {
			if vmNetwork(onc.NetworkName, o.Namespace) == network && ipam.NormalizeMAC(onc.MACAddress) == mac {
				es.add(base+".macAddress", mac, "is already used on network %s by VirtualMachineNetworkConfig %s/%s", network, o.Namespace, o.Name)
				return es, nil
			}
		}
	}
	return es, nil
}

// checkRequestedIP asks the pool's IPAM whether ip could ever be handed out.
func checkRequestedIP(es *FieldErrors, field, ip string, pool *v1alpha1.IPPool) {
	c := pool.Spec.IPv4Config
	poolName := pool.Namespace + "/" + pool.Name
	if !pool.HasIPv4() {
		es.add(field, ip, "cannot be given: IPPool %s is IPv6-only (no spec.ipv4Config)", poolName)
		return
	}
	switch ip {
	case string(c.ServerIP):
		es.add(field, ip, "is the server IP of IPPool %s", poolName)
		return
	case string(c.Router):
		es.add(field, ip, "is the router of IPPool %s", poolName)
		return
	}
	// A pool stored before the webhook was installed may be invalid; never
	// hand such a spec to the IPAM.
	if bad := ValidateIPPoolSpec(pool, Options{}); len(bad) > 0 {
		es.add(field, ip, "cannot be checked: IPPool %s is invalid: %v", poolName, bad[0])
		return
	}
	p, err := ipam.New(ipamConfig(pool))
	if err != nil {
		es.add(field, ip, "cannot be checked: IPPool %s is invalid: %v", poolName, err)
		return
	}
	// A trial allocation on an empty IPAM says whether the address is in the
	// range and not blocked; it tells nothing of other VMs' allocations.
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
}
