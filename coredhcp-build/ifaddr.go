package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// setInterfaceAddress applies IFACE=IP/PREFIX: the address is added to the
// interface and the interface brought up. AddrReplace makes a restart with
// the address already present a no-op instead of an error.
func setInterfaceAddress(spec string) error {
	iface, cidr, ok := strings.Cut(spec, "=")
	if !ok || iface == "" || cidr == "" {
		return fmt.Errorf("--interface-address %q: want IFACE=IP/PREFIX", spec)
	}
	pfx, err := netip.ParsePrefix(cidr)
	if err != nil || pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
		return fmt.Errorf("--interface-address %q: %q is not an IPv4 or IPv6 IP/PREFIX", spec, cidr)
	}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("--interface-address %q: find interface %s: %w", spec, iface, err)
	}
	addr, err := netlink.ParseAddr(pfx.String())
	if err != nil {
		return fmt.Errorf("--interface-address %q: %w", spec, err)
	}
	if pfx.Addr().Is6() {
		// Usable at once: the pool's server address is the agent's alone,
		// and DHCPv6 replies must not wait for duplicate address detection.
		addr.Flags |= unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set %s on %s: %w", pfx, iface, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", iface, err)
	}
	return nil
}
