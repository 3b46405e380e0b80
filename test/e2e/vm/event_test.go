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
