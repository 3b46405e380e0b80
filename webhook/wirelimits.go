package webhook

import (
	"fmt"
	"net/netip"
	"strings"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Limits that come from the DHCP wire rather than from the API: what the
// agent can encode and what fits in one reply (issue 12 items 13 and 14).
// Kept apart from the API's own checks in ippool.go.
const (
	// MaxOptionBytes bounds the pool's configurable options on the wire
	// (dns, domainName, domainSearch, ntp, mtu, routes). A reply must fit
	// a 1,500-byte Ethernet frame: 1,472 bytes of DHCP message, minus the
	// 240 of header and magic cookie, the message type, server identifier,
	// lease times, mask and router the agent always sends (40), and room
	// for the relay agent information and client identifier it must echo
	// (about 190). Clients that accept less (576 bytes unless they say
	// otherwise in option 57) get the options they list first.
	MaxOptionBytes = 1000
	// MaxDNSLabel is RFC 1035's limit of a label.
	MaxDNSLabel = 63
	// ntpNameBytes is what a host name in ntp is counted as: it is sent
	// as the addresses it resolves to, at least one of 4 bytes.
	ntpNameBytes = 4
)

// validateWireLimits refuses a pool whose options the agent could not send:
// DNS names with labels over 63 characters (they would be written with
// length bytes RFC 1035 reserves for compression pointers) and options
// that do not fit in one reply.
func validateWireLimits(pool *v1alpha1.IPPool) FieldErrors {
	var es FieldErrors
	c := pool.Spec.IPv4Config
	if c.DomainName != nil {
		checkDNSLabels(&es, ipv4Path+".domainName", *c.DomainName)
	}
	for i, d := range c.DomainSearch {
		checkDNSLabels(&es, fmt.Sprintf("%s.domainSearch[%d]", ipv4Path, i), d)
	}
	for i, n := range c.NTP {
		if _, err := netip.ParseAddr(n); err != nil {
			checkDNSLabels(&es, fmt.Sprintf("%s.ntp[%d]", ipv4Path, i), n)
		}
	}
	if len(es) == 0 {
		checkOptionBytes(&es, c)
	}
	return es
}

// checkDNSLabels refuses a name with a label longer than 63 characters
// (checkDomainName already refuses other characters than letters, digits,
// hyphens and dots, and names over 253 characters).
func checkDNSLabels(es *FieldErrors, field, value string) {
	name := strings.TrimSuffix(value, ".")
	for _, label := range strings.Split(name, ".") {
		if len(label) > MaxDNSLabel {
			es.add(field, value, "has a label of %d characters (%.20s...); a DNS label has at most %d", len(label), label, MaxDNSLabel)
			return
		}
	}
}

// checkOptionBytes refuses options that take more than MaxOptionBytes on
// the wire, saying how much each takes.
func checkOptionBytes(es *FieldErrors, c v1alpha1.IPv4Config) {
	type part struct {
		name  string
		bytes int
	}
	var parts []part
	add := func(name string, data int) {
		if data > 0 {
			parts = append(parts, part{name, optionWireLen(data)})
		}
	}
	add("dns", 4*len(c.DNS))
	if c.DomainName != nil {
		add("domainName", len(*c.DomainName))
	}
	add("domainSearch", domainSearchLen(c.DomainSearch))
	ntp := 0
	for _, n := range c.NTP {
		if _, err := netip.ParseAddr(n); err == nil {
			ntp += 4
		} else {
			ntp += ntpNameBytes
		}
	}
	add("ntp", ntp)
	if c.MTU != nil {
		add("mtu", 2)
	}
	routes := 0
	for _, r := range c.Routes {
		if p, err := netip.ParsePrefix(r.Destination); err == nil {
			routes += 1 + (p.Bits()+7)/8 + 4
		}
	}
	if c.Router != "" && len(c.Routes) > 0 {
		routes += 1 + 4 // the default route the agent adds to option 121
	}
	add("routes", routes)
	total := 0
	desc := make([]string, 0, len(parts))
	for _, p := range parts {
		total += p.bytes
		desc = append(desc, fmt.Sprintf("%s %d", p.name, p.bytes))
	}
	if total > MaxOptionBytes {
		es.add(ipv4Path, "", "DHCP options take %d bytes on the wire (%s); at most %d fit in one reply: remove routes or search domains",
			total, strings.Join(desc, ", "), MaxOptionBytes)
	}
}

// optionWireLen is an option with n bytes of data on the wire: code and
// length per 255-byte piece (RFC 3396).
func optionWireLen(n int) int { return n + 2*((n+254)/255) }

// domainSearchLen is option 119's length without compression (an upper
// bound of what the agent sends): each name's labels, their length bytes
// and the root.
func domainSearchLen(names []string) int {
	n := 0
	for _, d := range names {
		d = strings.TrimSuffix(d, ".")
		if d != "" {
			n += len(d) + 2
		}
	}
	return n
}
