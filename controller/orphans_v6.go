package controller

import (
	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Orphans6 is Orphans for status.ipv6.allocated, whose entries record no
// owner: an entry is an orphan when no VMNetCfg lists its MAC on the pool's
// network.
func Orphans6(pool *v1alpha1.IPPool, owned Owned) map[string]string {
	if pool.Status.IPv6 == nil {
		return nil
	}
	out := map[string]string{}
	for ip, mac := range pool.Status.IPv6.Allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		if !owned[NIC{Network: pool.Spec.NetworkName, MAC: ipam.NormalizeMAC(mac)}] {
			out[ip] = mac
		}
	}
	return out
}

// releaseOrphans6 releases the exact (address, MAC) pairs still held as
// read, and returns them as "ip=mac".
func releaseOrphans6(am6 *ipam.Pool6, orphans map[string]string) []string {
	if am6 == nil {
		return nil
	}
	var freed []string
	for ip, mac := range orphans {
		if owner, ok := am6.Owner(ip); ok && owner == ipam.NormalizeMAC(mac) && am6.Release(ip) == nil {
			freed = append(freed, ip+"="+mac)
		}
	}
	return freed
}
