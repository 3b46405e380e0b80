package vm

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind is the DHCP event a console line reports (udhcpc's hook argument,
// plus boot, and the DHCPv6 client's events, whose names end in 6).
type Kind string

const (
	Boot      Kind = "boot"      // eth0 is up, udhcpc starts
	Bound     Kind = "bound"     // a new lease (after DISCOVER or a lost lease)
	Renew     Kind = "renew"     // the lease was renewed (or rebound)
	Nak       Kind = "nak"       // the server answered NAK
	Deconfig  Kind = "deconfig"  // the guest dropped its address
	LeaseFail Kind = "leasefail" // no answer to DISCOVER
	Error     Kind = "error"     // /init failed (e.g. a module did not load)

	// DHCPv6 (dhclient -6 beside udhcpc): the IPv6 address and its options.
	Bound6  Kind = "bound6"  // an IPv6 address was obtained
	Renew6  Kind = "renew6"  // renewed with the server that gave it
	Rebind6 Kind = "rebind6" // renewed with any server (after T2)
	Expire6 Kind = "expire6" // the guest dropped its IPv6 address
)

// IPv6 says whether the event is one of the DHCPv6 client's.
func (k Kind) IPv6() bool {
	switch k {
	case Bound6, Renew6, Rebind6, Expire6:
		return true
	}
	return false
}

// Event is one VMDHCP console line.
type Event struct {
	Seq  int // 1, 2, ... in console order
	Kind Kind
	// Bound and renew: the guest's own configuration after the hook ran.
	Addr      netip.Prefix // address and prefix on eth0
	Router    netip.Addr   // default route's gateway
	DNS       []netip.Addr // resolv.conf's IPv4 name servers
	MTU       int          // eth0's MTU
	LeaseTime time.Duration
	ServerID  netip.Addr
	Domain    string
	MAC       string // boot only
	Message   string // nak only
	// Bound6, renew6 and rebind6: the guest's own IPv6 configuration.
	Addr6             netip.Prefix  // the DHCPv6 address on eth0, as the kernel holds it
	DNS6              []netip.Addr  // resolv.conf's IPv6 name servers
	Search            []string      // resolv.conf's search list (IPv4 and IPv6 domains)
	ValidLifetime     time.Duration // the address's remaining lifetimes in the guest's kernel
	PreferredLifetime time.Duration
	// GuestUptime is the guest's /proc/uptime at the event: on the boot
	// event, how long the kernel took to get to a NIC.
	GuestUptime time.Duration
	Received    time.Time     // when the host read the line
	SinceStart  time.Duration // Received - the start of QEMU
	Line        string        // the line as printed
}

func (e Event) String() string {
	switch {
	case e.Kind.IPv6() && e.Addr6.IsValid():
		dns := make([]string, len(e.DNS6))
		for i, d := range e.DNS6 {
			dns[i] = d.String()
		}
		return fmt.Sprintf("#%d %s %s dns %s search %s valid %s preferred %s (guest uptime %s)",
			e.Seq, e.Kind, e.Addr6, strings.Join(dns, ","), strings.Join(e.Search, ","), e.ValidLifetime, e.PreferredLifetime, e.GuestUptime)
	case e.Kind == Bound || e.Kind == Renew || e.Addr.IsValid():
		dns := make([]string, len(e.DNS))
		for i, d := range e.DNS {
			dns[i] = d.String()
		}
		return fmt.Sprintf("#%d %s %s router %s dns %s mtu %d lease %s from %s (guest uptime %s)",
			e.Seq, e.Kind, e.Addr, e.Router, strings.Join(dns, ","), e.MTU, e.LeaseTime, e.ServerID, e.GuestUptime)
	case strings.Contains(e.Line, marker):
		return fmt.Sprintf("#%d %s", e.Seq, e.Line[strings.Index(e.Line, marker)+len(marker):])
	default:
		return fmt.Sprintf("#%d %s", e.Seq, e.Kind)
	}
}

const marker = "VMDHCP "

// parseLine reads a console line printed by init.sh, udhcpc.sh or
// dhclient6.sh. The marker may follow other output on the same line (a
// kernel message the serial port interleaved), so it is searched, not
// expected first.
func parseLine(line string) (Event, bool) {
	i := strings.Index(line, marker)
	if i < 0 {
		return Event{}, false
	}
	rest := line[i+len(marker):]
	kind, rest, _ := strings.Cut(rest, " ")
	ev := Event{Kind: Kind(kind), Line: line}
	switch ev.Kind {
	case Boot, Bound, Renew, Nak, Deconfig, LeaseFail, Error, Bound6, Renew6, Rebind6, Expire6:
	default:
		return Event{}, false
	}
	// message= comes last and may hold spaces.
	if before, msg, ok := strings.Cut(rest, "message="); ok {
		ev.Message = strings.TrimSpace(msg)
		rest = before
	}
	for _, f := range strings.Fields(rest) {
		k, val, _ := strings.Cut(f, "=")
		if val == "" {
			continue
		}
		switch k {
		case "ip":
			ev.Addr, _ = netip.ParsePrefix(val)
		case "router":
			ev.Router, _ = netip.ParseAddr(val)
		case "dns":
			ev.DNS = addrs(val)
		case "mtu":
			ev.MTU, _ = strconv.Atoi(val)
		case "lease":
			ev.LeaseTime = seconds(val)
		case "server":
			ev.ServerID, _ = netip.ParseAddr(val)
		case "domain":
			ev.Domain = val
		case "mac":
			ev.MAC = val
		case "ip6":
			ev.Addr6, _ = netip.ParsePrefix(val)
		case "dns6":
			ev.DNS6 = addrs(val)
		case "search":
			ev.Search = strings.Split(val, ",")
		case "valid":
			ev.ValidLifetime = seconds(val)
		case "preferred":
			ev.PreferredLifetime = seconds(val)
		case "uptime":
			if s, err := strconv.ParseFloat(val, 64); err == nil {
				ev.GuestUptime = time.Duration(s * float64(time.Second))
			}
		}
	}
	return ev, true
}

// addrs parses a comma-separated address list, skipping what is not one.
func addrs(list string) []netip.Addr {
	var out []netip.Addr
	for _, d := range strings.Split(list, ",") {
		if a, err := netip.ParseAddr(d); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// seconds parses a whole number of seconds; anything else (e.g. the
// kernel's "forever") is 0.
func seconds(s string) time.Duration {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return time.Duration(n) * time.Second
}
