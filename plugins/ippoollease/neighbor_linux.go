package ippoollease

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// NeighborMAC looks addr up in the kernel's IPv6 neighbor table (the agent
// shares the link with its clients, so a client that sent us a packet from
// its link-local address is there).
func NeighborMAC(addr netip.Addr) (net.HardwareAddr, bool) {
	neighs, err := netlink.NeighList(0, netlink.FAMILY_V6)
	if err != nil {
		return nil, false
	}
	ip := net.IP(addr.AsSlice())
	for _, n := range neighs {
		if n.IP.Equal(ip) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
			return n.HardwareAddr, true
		}
	}
	return nil, false
}
