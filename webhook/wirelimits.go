package webhook

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/dnsname"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
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
	// ntpNameBytes is what a host name in ntp is counted as: it is sent
	// as the addresses it resolves to, at least one of 4 bytes.
	ntpNameBytes = 4
)

// validateWireLimits refuses a pool whose options could not fit in any DHCP
// reply. Entries the agent cannot send at all are not refused (Harvester
// admits them): the agent leaves them out and optionWarnings says so.
func validateWireLimits(pool *v1alpha1.IPPool) FieldErrors {
	var es FieldErrors
	checkOptionBytes(&es, pool.Spec.IPv4Config)
	return es
}

// Entries of the option lists as the agent reads them.
func dnsSent(d string) bool { _, err := poolwatch.ParseV4(d); return err == nil }

// ntpKind is "address" (sent as is), "name" (resolved by the agent, sent as
// its IPv4 addresses) or "" (neither: left out).
func ntpKind(n string) string {
	if _, ok := parseIPv4(n); ok {
		return "address"
	}
	if looksLikeIPv4(n) || dnsname.Check(n) != nil {
		return ""
	}
	return "name"
}

// looksLikeIPv4 is a dotted quad that is not a valid address (999.1.1.1,
// 010.0.0.1): no host name, so never looked up.
func looksLikeIPv4(s string) bool {
	return strings.Count(s, ".") == 3 && strings.Trim(s, "0123456789.") == ""
}

// optionWarnings says what the agent does with the option entries it cannot
// send as written: what is left out of which option, and how NTP host
// names and lease times beyond 32 bits reach the wire.
func optionWarnings(c v1alpha1.IPv4Config) []string {
	var ws []string
	for i, d := range c.DNS {
		if !dnsSent(d) {
			ws = append(ws, fmt.Sprintf("%s.dns[%d]: %s is not an IPv4 address: option 6 carries IPv4 addresses only, so the agent leaves it out and sends the other DNS servers", ipv4Path, i, d))
		}
	}
	if c.DomainName != nil && *c.DomainName != "" {
		if err := dnsname.Check(*c.DomainName); err != nil {
			ws = append(ws, fmt.Sprintf("%s.domainName: %v: the agent sends it as written in option 15, and clients may ignore it", ipv4Path, err))
		}
	}
	for i, d := range c.DomainSearch {
		if err := dnsname.Check(d); err != nil {
			ws = append(ws, fmt.Sprintf("%s.domainSearch[%d]: %v: option 119 cannot carry it, so the agent leaves it out and sends the other search domains", ipv4Path, i, err))
		}
	}
	var names []string
	for i, n := range c.NTP {
		switch ntpKind(n) {
		case "name":
			names = append(names, n)
		case "":
			ws = append(ws, fmt.Sprintf("%s.ntp[%d]: %s is neither an IPv4 address nor a host name: option 42 carries IPv4 addresses only, so the agent leaves it out", ipv4Path, i, n))
		}
	}
	if len(names) > 0 {
		ws = append(ws, fmt.Sprintf("%s.ntp: %s: option 42 carries IPv4 addresses only, so the agent resolves host names (on every change of the pool and every 5 minutes) and sends the IPv4 addresses they resolve to; a name that does not resolve is left out",
			ipv4Path, strings.Join(names, ", ")))
	}
	if c.LeaseTime != nil && int64(*c.LeaseTime) >= math.MaxUint32 {
		ws = append(ws, fmt.Sprintf("%s.leaseTime: %d does not fit option 51's 32 bits: the agent sends 4294967295, an infinite lease (clients never renew, so option changes reach them only when they restart)", ipv4Path, *c.LeaseTime))
	}
	return ws
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
	dns := 0
	for _, d := range c.DNS {
		if dnsSent(d) {
			dns += 4
		}
	}
	add("dns", dns)
	if c.DomainName != nil {
		add("domainName", len(*c.DomainName))
	}
	// The agent's own encoder: compressed, and without what it leaves out.
	search, _ := dnsname.SearchList(c.DomainSearch)
	add("domainSearch", len(search))
	ntp := 0
	for _, n := range c.NTP {
		switch ntpKind(n) {
		case "address":
			ntp += 4
		case "name":
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
	for _, p := range parts {
		total += p.bytes
	}
	if total <= MaxOptionBytes {
		return
	}
	// Largest first: that is what to shorten.
	slices.SortStableFunc(parts, func(a, b part) int { return b.bytes - a.bytes })
	desc := make([]string, 0, len(parts))
	for _, p := range parts {
		desc = append(desc, fmt.Sprintf("%s %d", p.name, p.bytes))
	}
	es.add(ipv4Path, "", "DHCP options take %d bytes on the wire (%s); at most %d fit in one reply: remove %d bytes, e.g. entries of spec.ipv4Config.%s",
		total, strings.Join(desc, ", "), MaxOptionBytes, total-MaxOptionBytes, parts[0].name)
}

// optionWireLen is an option with n bytes of data on the wire: code and
// length per 255-byte piece (RFC 3396).
func optionWireLen(n int) int { return n + 2*((n+254)/255) }
