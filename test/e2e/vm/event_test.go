package vm

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	// A kernel message the serial port put before the marker.
	ev, ok := parseLine("[    4.1] random: crng init done\rVMDHCP bound ip=198.18.0.41/24 router=198.18.0.1 dns=198.18.0.53,198.18.0.54 mtu=1450 lease=30 server=198.18.0.2 domain=example.internal uptime=9.87")
	if !ok {
		t.Fatal("bound line not recognised")
	}
	if ev.Kind != Bound || ev.Addr != netip.MustParsePrefix("198.18.0.41/24") || ev.Router != netip.MustParseAddr("198.18.0.1") ||
		!slices.Equal(ev.DNS, []netip.Addr{netip.MustParseAddr("198.18.0.53"), netip.MustParseAddr("198.18.0.54")}) ||
		ev.MTU != 1450 || ev.LeaseTime != 30*time.Second || ev.ServerID != netip.MustParseAddr("198.18.0.2") ||
		ev.Domain != "example.internal" || ev.GuestUptime != 9870*time.Millisecond {
		t.Errorf("parsed %+v", ev)
	}

	// Empty values (no router, no DNS) stay zero.
	ev, ok = parseLine("VMDHCP renew ip=10.0.0.5/16 router= dns= mtu=1500 lease=60 server=10.0.0.1 domain= uptime=1.00")
	if !ok || ev.Kind != Renew || ev.Router.IsValid() || ev.DNS != nil || ev.Domain != "" {
		t.Errorf("parsed %+v", ev)
	}

	ev, ok = parseLine("VMDHCP nak uptime=3.50 message=address not available here")
	if !ok || ev.Kind != Nak || ev.Message != "address not available here" || ev.GuestUptime != 3500*time.Millisecond {
		t.Errorf("parsed %+v", ev)
	}

	ev, ok = parseLine("VMDHCP boot mac=52:54:00:4d:00:41 kernel=6.1.0-57-cloud-amd64 uptime=7.87")
	if !ok || ev.Kind != Boot || ev.MAC != "52:54:00:4d:00:41" {
		t.Errorf("parsed %+v", ev)
	}

	for _, line := range []string{"udhcpc: broadcasting discover", "VMDHCP", "VMDHCP unknown ip=1.2.3.4/8"} {
		if ev, ok := parseLine(line); ok {
			t.Errorf("%q parsed as %+v", line, ev)
		}
	}
}

func TestParseLine6(t *testing.T) {
	ev, ok := parseLine("VMDHCP bound6 ip6=fd00:198::41/128 dns6=fd00:198::53,fd00:198::54 search=example.internal,other.example valid=1199 preferred=599 uptime=9.12")
	if !ok {
		t.Fatal("bound6 line not recognised")
	}
	if ev.Kind != Bound6 || !ev.Kind.IPv6() || ev.Addr6 != netip.MustParsePrefix("fd00:198::41/128") ||
		!slices.Equal(ev.DNS6, []netip.Addr{netip.MustParseAddr("fd00:198::53"), netip.MustParseAddr("fd00:198::54")}) ||
		!slices.Equal(ev.Search, []string{"example.internal", "other.example"}) ||
		ev.ValidLifetime != 1199*time.Second || ev.PreferredLifetime != 599*time.Second || ev.GuestUptime != 9120*time.Millisecond {
		t.Errorf("parsed %+v", ev)
	}
	// The IPv4 fields stay empty: a bound6 line is no IPv4 lease.
	if ev.Addr.IsValid() || ev.DNS != nil || ev.Kind == Bound {
		t.Errorf("bound6 filled IPv4 fields: %+v", ev)
	}

	// No name servers, no search list, an infinite lifetime ("forever").
	ev, ok = parseLine("VMDHCP renew6 ip6=fd00::5/64 dns6= search= valid=forever preferred=forever uptime=1.00")
	if !ok || ev.Kind != Renew6 || ev.Addr6 != netip.MustParsePrefix("fd00::5/64") || ev.DNS6 != nil || ev.Search != nil || ev.ValidLifetime != 0 {
		t.Errorf("parsed %+v", ev)
	}

	for line, kind := range map[string]Kind{
		"VMDHCP rebind6 ip6=fd00::5/128 dns6=fd00::53 search= valid=60 preferred=30 uptime=2.00": Rebind6,
		"VMDHCP expire6 uptime=3.00": Expire6,
	} {
		if ev, ok := parseLine(line); !ok || ev.Kind != kind || !ev.Kind.IPv6() {
			t.Errorf("%q parsed as %+v, %v; want kind %s", line, ev, ok, kind)
		}
	}
	if Bound.IPv6() || Renew.IPv6() {
		t.Error("IPv4 kinds report IPv6")
	}
}
