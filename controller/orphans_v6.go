package controller

import (
	"slices"
	"strings"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Orphans6 is Orphans for status.ipv6.allocated. The owner of an entry is
// status.ipv6.owners' in an IPv6-only pool, and in a dual-stack pool for
// an allocation made while its MAC had no IPv4 address; otherwise, in a
// dual-stack pool, whose IPv6 half follows the IPv4 owner, it is the owner
// status.ipv4.owners records for the MAC's IPv4 address ("" when none): an
// entry is an orphan when that owner no longer lists its MAC on the pool's
// network (for an entry without a known owner: when no VMNetCfg lists its
// MAC there).
func Orphans6(pool *v1alpha1.IPPool, owned Owned) []Orphan {
	st := pool.Status.IPv6
	if st == nil {
		return nil
	}
	var owner4 map[string]string // MAC -> owner of its IPv4 address
	if pool.HasIPv4() && pool.Status.IPv4 != nil {
		owner4 = map[string]string{}
		for ip, mac := range pool.Status.IPv4.Allocated {
			if h := pool.Status.IPv4.Owners[ip]; h != "" {
				owner4[ipam.NormalizeMAC(mac)] = h
			}
		}
	}
	var out []Orphan
	for ip, mac := range st.Allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		n := NIC{Network: pool.Network(), MAC: ipam.NormalizeMAC(mac), Owner: st.Owners[ip]}
		if owner4 != nil && n.Owner == "" { // a dual-stack entry with no owner of its own
			n.Owner = owner4[n.MAC]
		}
		if !owned[n] {
			out = append(out, Orphan{IP: ip, MAC: n.MAC, Owner: n.Owner})
		}
	}
	slices.SortFunc(out, func(a, b Orphan) int { return strings.Compare(a.IP, b.IP) })
	return out
}

// releaseOrphans6 releases the orphans that are still exactly as read
// (address, MAC and owner), and returns them as "ip=mac". In a dual-stack
// pool (am set) the owner read is the IPv4 one, compared with the owner
// the IPv4 half holds the MAC's address for now: call it before the IPv4
// orphans are released. So, as for IPv4, an entry freed and given again to
// the same MAC for another VMNetCfg after the pool was read is left alone.
func releaseOrphans6(am *ipam.Pool, am6 *ipam.Pool6, orphans []Orphan) []string {
	if am6 == nil {
		return nil
	}
	var freed []string
	for _, o := range orphans {
		holder6 := o.Owner
		if am != nil && am6.Holder(o.IP) == "" { // follows the IPv4 owner
			cur := ""
			if ip4, ok := am.Lookup(o.MAC); ok {
				cur = am.Holder(ip4)
			}
			if cur != o.Owner {
				continue
			}
			holder6 = "" // the IPv6 half of a dual-stack pool records none
		}
		if am6.ReleaseExact(o.IP, o.MAC, holder6) {
			freed = append(freed, o.IP+"="+o.MAC)
		}
	}
	return freed
}
