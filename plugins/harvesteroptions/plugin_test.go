package harvesteroptions

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

func examplePool(t testing.TB) *poolwatch.Pool {
	t.Helper()
	p, err := poolwatch.FromIPPool(dhcptest.IPPool())
	if err != nil {
		t.Fatalf("FromIPPool: %v", err)
	}
	return p
}

// fakeLookup answers ntp.example with 192.168.100.124, or fails.
func fakeLookup(fail bool) LookupFunc {
	return func(_ context.Context, network, host string) ([]netip.Addr, error) {
		if fail || host != "ntp.example" || network != "ip4" {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("192.168.100.124")}, nil
	}
}

// Wire encodings the options must have, written out by hand from the RFCs.
var (
	// RFC 2132 9.8: MTU as a 16-bit big-endian number.
	wantMTU = []byte{0x05, 0xaa} // 1450
	// RFC 3442: 10.10.0.0/16 via 192.168.100.254 = 16 10 10 + gw;
	// 0.0.0.0/0 via 192.168.100.1 = 0 + gw.
	wantRoutes = []byte{16, 10, 10, 192, 168, 100, 254, 0, 192, 168, 100, 1}
)

func TestHandleSetsEveryOption(t *testing.T) {
	pool := examplePool(t)
	o := New(func() *poolwatch.Pool { return pool })
	o.ResolveOnce(context.Background(), fakeLookup(false), logr.Discard())

	all := []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionNTPServers, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue,
		dhcpv4.OptionRebindingTimeValue, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionInterfaceMTU, dhcpv4.OptionClasslessStaticRoute}
	tests := []struct {
		name    string
		req     *dhcpv4.DHCPv4
		present []dhcpv4.OptionCode
		absent  []dhcpv4.OptionCode
	}{
		{name: "discover without parameter list gets everything",
			req: dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), present: all},
		{name: "request without parameter list gets everything",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC), present: all},
		{name: "parameter list limits the optional options",
			req: dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC,
				dhcpv4.WithRequestedOptions(dhcpv4.OptionDomainNameServer, dhcpv4.OptionInterfaceMTU)),
			present: []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionDomainNameServer, dhcpv4.OptionInterfaceMTU,
				dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue},
			absent: []dhcpv4.OptionCode{dhcpv4.OptionRouter, dhcpv4.OptionDomainName, dhcpv4.OptionNTPServers,
				dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionClasslessStaticRoute}},
		{name: "parameter list asking for everything",
			req:     dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithRequestedOptions(all...)),
			present: all},
		{name: "inform gets no lease times",
			req:     dhcptest.Packet(dhcpv4.MessageTypeInform, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP)),
			present: all[:5],
			absent:  []dhcpv4.OptionCode{dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue}},
		{name: "release reply is left alone",
			req:    dhcptest.Packet(dhcpv4.MessageTypeRelease, dhcptest.KnownMAC),
			absent: all},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := dhcptest.Serve(tc.req, o.Handle)
			wire, err := dhcpv4.FromBytes(resp.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
			for _, c := range tc.present {
				if !wire.Options.Has(c) {
					t.Errorf("option %s missing", c)
				}
			}
			for _, c := range tc.absent {
				if wire.Options.Has(c) {
					t.Errorf("option %s present, want absent", c)
				}
			}
			checkValues(t, wire)
		})
	}
}

// checkValues checks the value of every option that is present.
func checkValues(t *testing.T, r *dhcpv4.DHCPv4) {
	t.Helper()
	has := r.Options.Has
	if has(dhcpv4.OptionSubnetMask) && r.SubnetMask().String() != net.CIDRMask(24, 32).String() {
		t.Errorf("subnet mask %s", r.SubnetMask())
	}
	if has(dhcpv4.OptionRouter) && (len(r.Router()) != 1 || !r.Router()[0].Equal(dhcptest.Router)) {
		t.Errorf("router %v", r.Router())
	}
	if has(dhcpv4.OptionDomainNameServer) && (len(r.DNS()) != 2 || r.DNS()[0].String() != "192.168.100.53" || r.DNS()[1].String() != "1.1.1.1") {
		t.Errorf("dns %v", r.DNS())
	}
	if has(dhcpv4.OptionDomainName) && r.DomainName() != "example.internal" {
		t.Errorf("domain name %q", r.DomainName())
	}
	if has(dhcpv4.OptionDNSDomainSearchList) {
		got := r.DomainSearch()
		if got == nil || len(got.Labels) != 2 || got.Labels[0] != "example.internal" || got.Labels[1] != "corp.example" {
			t.Errorf("domain search %v", got)
		}
		raw := r.Options.Get(dhcpv4.OptionDNSDomainSearchList)
		// The first name must be plain RFC 1035 labels.
		first := []byte("\x07example\x08internal\x00")
		if !bytes.HasPrefix(raw, first) {
			t.Errorf("option 119 starts %q, want %q", raw, first)
		}
	}
	if has(dhcpv4.OptionNTPServers) {
		ntp := r.NTPServers()
		if len(ntp) != 2 || ntp[0].String() != "192.168.100.123" || ntp[1].String() != "192.168.100.124" {
			t.Errorf("ntp %v, want the literal and the resolved name", ntp)
		}
	}
	if has(dhcpv4.OptionIPAddressLeaseTime) && r.IPAddressLeaseTime(0) != 600*time.Second {
		t.Errorf("lease time %s", r.IPAddressLeaseTime(0))
	}
	if has(dhcpv4.OptionRenewTimeValue) && r.IPAddressRenewalTime(0) != 300*time.Second {
		t.Errorf("renewal time %s", r.IPAddressRenewalTime(0))
	}
	if has(dhcpv4.OptionRebindingTimeValue) && r.IPAddressRebindingTime(0) != 525*time.Second {
		t.Errorf("rebinding time %s", r.IPAddressRebindingTime(0))
	}
	if has(dhcpv4.OptionInterfaceMTU) && !bytes.Equal(r.Options.Get(dhcpv4.OptionInterfaceMTU), wantMTU) {
		t.Errorf("mtu % x", r.Options.Get(dhcpv4.OptionInterfaceMTU))
	}
	if has(dhcpv4.OptionClasslessStaticRoute) && !bytes.Equal(r.Options.Get(dhcpv4.OptionClasslessStaticRoute), wantRoutes) {
		t.Errorf("classless routes % d, want % d", r.Options.Get(dhcpv4.OptionClasslessStaticRoute), wantRoutes)
	}
}

func TestNTPKeepsPreviousAnswerWhenLookupFails(t *testing.T) {
	pool := examplePool(t)
	o := New(func() *poolwatch.Pool { return pool })
	o.ResolveOnce(context.Background(), fakeLookup(true), logr.Discard())
	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	if ntp := resp.NTPServers(); len(ntp) != 1 {
		t.Fatalf("unresolved name served: %v", ntp)
	}
	o.ResolveOnce(context.Background(), fakeLookup(false), logr.Discard())
	o.ResolveOnce(context.Background(), fakeLookup(true), logr.Discard())
	resp = dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	if ntp := resp.NTPServers(); len(ntp) != 2 {
		t.Fatalf("resolved name lost after a failed lookup: %v", ntp)
	}
}

func TestOptionsFollowThePoolLive(t *testing.T) {
	ipp := dhcptest.IPPool()
	p1, _ := poolwatch.FromIPPool(ipp)
	current := p1
	o := New(func() *poolwatch.Pool { return current })
	// Served once before the change, so the encoded options of p1 are
	// cached and must be replaced.
	before := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC), o.Handle)
	if dns := before.DNS(); len(dns) == 0 || dns[0].String() == "9.9.9.9" {
		t.Fatalf("dns %v before the change", dns)
	}
	ipp.Spec.IPv4Config.DNS = []string{"9.9.9.9"}
	ipp.Spec.IPv4Config.Routes = nil
	p2, _ := poolwatch.FromIPPool(ipp)
	current = p2
	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC), o.Handle)
	if dns := resp.DNS(); len(dns) != 1 || dns[0].String() != "9.9.9.9" {
		t.Fatalf("dns %v after change, want 9.9.9.9", dns)
	}
	if resp.Options.Has(dhcpv4.OptionClasslessStaticRoute) {
		t.Fatalf("option 121 sent for a pool without routes")
	}
}

func TestNoPoolLeavesReplyAlone(t *testing.T) {
	o := New(func() *poolwatch.Pool { return nil })
	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	if resp.Options.Has(dhcpv4.OptionSubnetMask) || resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("options set without a pool: %s", resp.Summary())
	}
}

// A later plugin that edits an option's bytes in place must not change
// what the next client receives: the cached encoding is never handed out.
func TestRepliesDoNotShareOptionBytes(t *testing.T) {
	pool := examplePool(t)
	o := New(func() *poolwatch.Pool { return pool })
	first := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	want := append([]byte(nil), first.Options.Get(dhcpv4.OptionDomainNameServer)...)
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionDomainNameServer, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter} {
		v := first.Options.Get(code)
		for i := range v {
			v[i] = 0xff
		}
	}
	second := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	if got := second.Options.Get(dhcpv4.OptionDomainNameServer); !bytes.Equal(got, want) {
		t.Fatalf("dns bytes % x after an earlier reply was edited, want % x", got, want)
	}
	if m := second.SubnetMask(); m.String() != "ffffff00" {
		t.Fatalf("subnet mask %s after an earlier reply was edited", m)
	}
}
