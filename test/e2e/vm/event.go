package vm

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind is the DHCP event a console line reports (udhcpc's hook argument,
// plus boot).
type Kind string

const (
	Boot      Kind = "boot"      // eth0 is up, udhcpc starts
	Bound     Kind = "bound"     // a new lease (after DISCOVER or a lost lease)
	Renew     Kind = "renew"     // the lease was renewed (or rebound)
	Nak       Kind = "nak"       // the server answered NAK
	Deconfig  Kind = "deconfig"  // the guest dropped its address
	LeaseFail Kind = "leasefail" // no answer to DISCOVER
	Error     Kind = "error"     // /init failed (e.g. a module did not load)
)

// Event is one VMDHCP console line.
type Event struct {
	Seq  int // 1, 2, ... in console order
	Kind Kind
	// Bound and renew: the guest's own configuration after the hook ran.
	Addr      netip.Prefix // address and prefix on eth0
	Router    netip.Addr   // default route's gateway
	DNS       []netip.Addr // resolv.conf's name servers
	MTU       int          // eth0's MTU
	LeaseTime time.Duration
	ServerID  netip.Addr
	Domain    string
	MAC       string // boot only
	Message   string // nak only
	// GuestUptime is the guest's /proc/uptime at the event: on the boot
	// event, how long the kernel took to get to a NIC.
	GuestUptime time.Duration
	Received    time.Time     // when the host read the line
	SinceStart  time.Duration // Received - the start of QEMU
	Line        string        // the line as printed
}

func (e Event) String() string {
	switch {
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

// parseLine reads a console line printed by init.sh or udhcpc.sh. The
// marker may follow other output on the same line (a kernel message the
// serial port interleaved), so it is searched, not expected first.
func parseLine(line string) (Event, bool) {
	i := strings.Index(line, marker)
	if i < 0 {
		return Event{}, false
	}
	rest := line[i+len(marker):]
	kind, rest, _ := strings.Cut(rest, " ")
	ev := Event{Kind: Kind(kind), Line: line}
	switch ev.Kind {
	case Boot, Bound, Renew, Nak, Deconfig, LeaseFail, Error:
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
			for _, d := range strings.Split(val, ",") {
				if a, err := netip.ParseAddr(d); err == nil {
					ev.DNS = append(ev.DNS, a)
				}
			}
		case "mtu":
			ev.MTU, _ = strconv.Atoi(val)
		case "lease":
			if s, err := strconv.Atoi(val); err == nil {
				ev.LeaseTime = time.Duration(s) * time.Second
			}
		case "server":
			ev.ServerID, _ = netip.ParseAddr(val)
		case "domain":
			ev.Domain = val
		case "mac":
			ev.MAC = val
		case "uptime":
			if s, err := strconv.ParseFloat(val, 64); err == nil {
				ev.GuestUptime = time.Duration(s * float64(time.Second))
			}
		}
	}
	return ev, true
}
