package controller

import (
	"fmt"
	"net/netip"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
)

// serverDUID is the MAC of the DHCPv6 server DUID of a pool with an IPv6
// half, "" otherwise (no server6 in the agent's config).
func serverDUID(pool *v1alpha1.IPPool) string {
	if !pool.HasIPv6() {
		return ""
	}
	return agentconfig.ServerDUIDMAC(pool.Namespace, pool.Name)
}

// agentAddressArgs are the --interface-address flags of a pool's agent: the
// IPv4 server IP (exactly as before dual stack) and, for a pool with an
// IPv6 half, its IPv6 server IP.
func agentAddressArgs(pool *v1alpha1.IPPool) ([]string, error) {
	var args []string
	if pool.HasIPv4() {
		prefix, err := netip.ParsePrefix(pool.Spec.IPv4Config.CIDR)
		if err != nil {
			return nil, fmt.Errorf("agent for %s/%s: cidr %q: %w", pool.Namespace, pool.Name, pool.Spec.IPv4Config.CIDR, err)
		}
		args = append(args, "--interface-address", fmt.Sprintf("%s=%s/%d", AgentInterface, pool.Spec.IPv4Config.ServerIP, prefix.Bits()))
	}
	if c := pool.Spec.IPv6Config; c != nil {
		prefix, err := netip.ParsePrefix(c.CIDR)
		if err != nil {
			return nil, fmt.Errorf("agent for %s/%s: ipv6 cidr %q: %w", pool.Namespace, pool.Name, c.CIDR, err)
		}
		args = append(args, "--interface-address", fmt.Sprintf("%s=%s/%d", AgentInterface, c.ServerIP, prefix.Bits()))
	}
	return args, nil
}
