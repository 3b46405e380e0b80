package webhook

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Manifests Harvester's add-on admits must be admitted here too. Where
// Harvester's behaviour is harmless the manifest passes silently; where ours
// differs in a way the user should know, it passes with an admission warning
// (kubectl prints it). Refusals of what Harvester admits are only for inputs
// that can never work, and say what to change (docs/migrating-from-harvester.md
// lists them).

// vmNetwork is a VMNetCfg's network as namespace/name: a bare name is in the
// VMNetCfg's own namespace, as multus reads a VM's network (and as the
// controller reads it).
func vmNetwork(network, namespace string) string {
	if network == "" || strings.Contains(network, "/") {
		return network
	}
	return namespace + "/" + network
}

// IPPoolWarnings are the admission warnings for an IPPool being created or
// updated: what is admitted as Harvester admits it but behaves in a way the
// user may not expect.
func IPPoolWarnings(ctx context.Context, lk Lookup, op admissionv1.Operation, pool, old *v1alpha1.IPPool) ([]string, error) {
	if pool == nil || op == admissionv1.Delete {
		return nil, nil
	}
	if op == admissionv1.Update && old != nil && specEqual(old, pool) {
		return nil, nil
	}
	var ws []string
	c := pool.Spec.IPv4Config
	if n := pool.Spec.NetworkName; n != "" && !strings.Contains(n, "/") {
		ws = append(ws, fmt.Sprintf("spec.networkName: %s has no namespace: read as %s, as Harvester does", n, pool.Network()))
	}
	if c.LeaseTime != nil {
		switch lt := *c.LeaseTime; {
		case lt <= 0:
			ws = append(ws, fmt.Sprintf("spec.ipv4Config.leaseTime: %d is not positive: clients get the default lease time of 1 hour (Harvester gives 1 year)", lt))
		case lt < MinLeaseTime:
			ws = append(ws, fmt.Sprintf("spec.ipv4Config.leaseTime: %d is shorter than %d seconds: every client renews every %d seconds", lt, MinLeaseTime, lt/2))
		}
	}
	ws = append(ws, optionWarnings(c)...)
	start, startOK := parseIPv4(string(c.Pool.Start))
	end, endOK := parseIPv4(string(c.Pool.End))
	seen := map[netip.Addr]bool{}
	for i, e := range c.Pool.Exclude {
		field := fmt.Sprintf("%s.pool.exclude[%d]", ipv4Path, i)
		a, ok := ipam.ParseIPv4(string(e))
		switch {
		case !ok:
			ws = append(ws, fmt.Sprintf("%s: %s is not an address: has no effect (Harvester ignores it too)", field, e))
			continue
		case seen[a]:
			ws = append(ws, fmt.Sprintf("%s: %s is listed twice", field, e))
		case startOK && endOK && (a.Less(start) || end.Less(a)):
			ws = append(ws, fmt.Sprintf("%s: %s is outside the range %s-%s and has no effect (it is still listed as EXCLUDED in the status)", field, e, start, end))
		}
		seen[a] = true
	}
	if op == admissionv1.Create {
		others, err := lk.IPPoolsForNetwork(ctx, pool.Network())
		if err != nil {
			return nil, err
		}
		for _, o := range others {
			if o.Namespace == pool.Namespace && o.Name == pool.Name {
				continue
			}
			ws = append(ws, fmt.Sprintf("spec.networkName: %s is already served by IPPool %s/%s: this pool stays unregistered (no agent, no addresses) until that one is deleted", pool.Network(), o.Namespace, o.Name))
			break
		}
	}
	return ws, nil
}

// VMNetCfgWarnings are the admission warnings for a VMNetCfg.
func VMNetCfgWarnings(cfg *v1alpha1.VirtualMachineNetworkConfig) []string {
	if cfg == nil {
		return nil
	}
	var ws []string
	for i, nc := range cfg.Spec.NetworkConfigs {
		if nc.NetworkName != "" && !strings.Contains(nc.NetworkName, "/") && cfg.Namespace != v1alpha1.DefaultNetworkNamespace {
			ws = append(ws, fmt.Sprintf("spec.networkConfigs[%d].networkName: %s has no namespace: read as %s (the VM's namespace, as multus reads it; Harvester's webhook reads default/%s)",
				i, nc.NetworkName, vmNetwork(nc.NetworkName, cfg.Namespace), nc.NetworkName))
		}
	}
	return ws
}

func specEqual(a, b *v1alpha1.IPPool) bool {
	return equality.Semantic.DeepEqual(a.Spec, b.Spec)
}
