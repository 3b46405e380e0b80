// Package wire reads the few DHCPv4 fields the plugins need straight from a
// packet's raw options. The library's accessors decode into new values on
// every call; on the packet path, several plugins asking for the message type
// of every packet made that a visible share of the agent's CPU.
package wire

import (
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// MessageType is option 53 of opts, or MessageTypeNone when it is absent or
// not exactly one byte long (as the library would refuse it).
func MessageType(opts dhcpv4.Options) dhcpv4.MessageType {
	v := opts.Get(dhcpv4.OptionDHCPMessageType)
	if len(v) != 1 {
		return dhcpv4.MessageTypeNone
	}
	return dhcpv4.MessageType(v[0])
}

// IPv4 is the address in option code of opts; false when the option is
// absent or not exactly four bytes (the library's GetIP returns nil then).
func IPv4(opts dhcpv4.Options, code dhcpv4.OptionCode) (netip.Addr, bool) {
	v := opts.Get(code)
	if len(v) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v)), true
}
