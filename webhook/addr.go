package webhook

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// parseIPv4 parses a dotted quad. IPv4-mapped IPv6 forms and leading zeros
// are refused: DHCP options carry four bytes, and "010.0.0.1" is read as
// octal by some tools.
func parseIPv4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// parseIPv4Prefix parses an IPv4 network in CIDR notation.
func parseIPv4Prefix(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, false
	}
	return p, true
}

// broadcastOf is the last address of an IPv4 prefix.
func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}

// hostRole says why an address of a prefix cannot be given to a host, or "".
func hostRole(p netip.Prefix, a netip.Addr) string {
	switch a {
	case p.Masked().Addr():
		return "is the network address of " + p.Masked().String()
	case broadcastOf(p):
		return "is the broadcast address of " + p.Masked().String()
	}
	return ""
}

// checkHostIn validates an address field that must be a usable host of the
// pool's network. It returns the address and whether it is usable, so that
// callers compare only addresses that passed (one error per mistake).
func checkHostIn(es *FieldErrors, field, value string, cidr netip.Prefix, cidrOK bool) (netip.Addr, bool) {
	a, ok := parseIPv4(value)
	if !ok {
		es.add(field, value, "is not an IPv4 address")
		return netip.Addr{}, false
	}
	if !cidrOK {
		return a, true
	}
	if !cidr.Contains(a) {
		es.add(field, value, "is outside spec.ipv4Config.cidr %s", cidr.Masked())
		return a, false
	}
	if role := hostRole(cidr, a); role != "" {
		es.add(field, value, "%s", role)
		return a, false
	}
	return a, true
}

// checkNetworkName validates a namespace/name reference to a
// NetworkAttachmentDefinition.
func checkNetworkName(es *FieldErrors, field, value string) (namespace, name string, ok bool) {
	if value == "" {
		es.add(field, "", "is required (namespace/name of a NetworkAttachmentDefinition)")
		return "", "", false
	}
	namespace, name, found := strings.Cut(value, "/")
	if !found || strings.Contains(name, "/") {
		es.add(field, value, "is not namespace/name of a NetworkAttachmentDefinition")
		return "", "", false
	}
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		es.add(field, value, "has an invalid namespace %q: %s", namespace, msgs[0])
		return "", "", false
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		es.add(field, value, "has an invalid name %q: %s", name, msgs[0])
		return "", "", false
	}
	return namespace, name, true
}

// parseUnicastMAC parses a 48-bit MAC and refuses group and all-zero
// addresses, which no NIC can own.
func parseUnicastMAC(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("is not a MAC address")
	}
	if len(hw) != 6 {
		return nil, fmt.Errorf("is not a 48-bit MAC address")
	}
	if hw[0]&1 == 1 {
		return nil, fmt.Errorf("is a multicast MAC address")
	}
	if hw.String() == "00:00:00:00:00:00" {
		return nil, fmt.Errorf("is the all-zero MAC address")
	}
	return hw, nil
}
