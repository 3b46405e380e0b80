package ippoollease

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// bigPool is the example pool with the most options admission let through
// before issue 12: 32 routes and 32 search domains, which made a 1,927-byte
// reply.
func bigPool(t *testing.T, mtu int) *poolwatch.Pool {
	t.Helper()
	ipp := dhcptest.IPPool()
	c := &ipp.Spec.IPv4Config
	c.Routes, c.DomainSearch = nil, nil
	for i := range 32 {
		c.Routes = append(c.Routes, v1alpha1.Route{Destination: fmt.Sprintf("10.%d.%d.0/24", i, i), Gateway: "192.168.100.254"})
		// No shared suffix, so compression cannot shrink them.
		c.DomainSearch = append(c.DomainSearch, fmt.Sprintf("search-domain-number-%02d.zone%02d", i, i))
	}
	c.MTU = &mtu
	p, err := poolwatch.FromIPPool(ipp)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue 12 item 13: a reply fits the client's maximum message size (option
// 57, never under RFC 2131's 576, never over the link's MTU), dropping
// options from the end of the client's parameter request list, never the
// essential ones.
func TestReplyFitsTheClientsMaximum(t *testing.T) {
	// dhclient's order of preference, roughly.
	prl := []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionClasslessStaticRoute,
		dhcpv4.OptionInterfaceMTU, dhcpv4.OptionNTPServers}
	relayInfo := dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, append([]byte{1, 30}, bytes.Repeat([]byte{'c'}, 30)...))
	tests := []struct {
		name    string
		mtu     int
		mods    []dhcpv4.Modifier
		maxSize int // DHCP message, without IP and UDP headers
	}{
		{name: "no option 57: RFC 2131's 576-byte datagram", mtu: 1500,
			mods: []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(prl...)}, maxSize: 576 - 28},
		{name: "option 57 below the floor counts as 576", mtu: 1500,
			mods: []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(prl...), dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(300))}, maxSize: 576 - 28},
		{name: "option 57 of 1000", mtu: 1500,
			mods: []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(prl...), dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1000))}, maxSize: 1000 - 28},
		{name: "option 57 above the link's MTU is bounded by the MTU", mtu: 1400,
			mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(9000))}, maxSize: 1400 - 28},
		{name: "relayed, with relay agent information echoed", mtu: 1500,
			mods:    []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(prl...), dhcpv4.WithGatewayIP(dhcptest.Router), dhcpv4.WithOption(relayInfo)},
			maxSize: 576 - 28},
	}
	for _, tc := range tests {
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			t.Run(tc.name+"/"+mt.String(), func(t *testing.T) {
				pool := bigPool(t, tc.mtu)
				reg := poolwatch.NewRegistry(logr.Discard())
				l := &Leaser{Pool: func() *poolwatch.Pool { return pool }, Metrics: reg.Metrics, Log: logr.Discard()}
				opts := harvesteroptions.New(func() *poolwatch.Pool { return pool })
				mods := append([]dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP))}, tc.mods...)
				req := dhcptest.Packet(mt, dhcptest.KnownMAC, mods...)
				resp := dhcptest.Serve(req, opts.Handle, l.Handle)
				if resp == nil {
					t.Fatal("no reply")
				}
				b := resp.ToBytes()
				if len(b) > tc.maxSize {
					t.Errorf("reply is %d bytes, client accepts %d", len(b), tc.maxSize)
				}
				r, err := dhcpv4.FromBytes(b)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range []dhcpv4.OptionCode{dhcpv4.OptionDHCPMessageType, dhcpv4.OptionServerIdentifier,
					dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter} {
					if !r.Options.Has(c) {
						t.Errorf("essential option %s dropped", c)
					}
				}
				if want := req.Options.Get(dhcpv4.OptionRelayAgentInformation); !bytes.Equal(r.Options.Get(dhcpv4.OptionRelayAgentInformation), want) {
					t.Errorf("relay agent information not echoed")
				}
				if !r.YourIPAddr.Equal(dhcptest.KnownIP) {
					t.Errorf("yiaddr %s", r.YourIPAddr)
				}
				// What is kept of the client's list is a prefix of it: an
				// option is only dropped after every one it listed later.
				if req.Options.Has(dhcpv4.OptionParameterRequestList) {
					dropped := false
					for _, c := range prl {
						has := r.Options.Has(c)
						if has && dropped {
							t.Errorf("option %s kept although an option listed before it was dropped", c)
						}
						dropped = dropped || !has
					}
				}
				if testutilCount(t, reg) == 0 {
					t.Errorf("options dropped but not counted")
				}
			})
		}
	}
}

// The example pool's replies fit 576 bytes as they are: nothing is dropped.
func TestSmallReplyKeepsEveryOption(t *testing.T) {
	pool := examplePool(t)
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: func() *poolwatch.Pool { return pool }, Metrics: reg.Metrics, Log: logr.Discard()}
	opts := harvesteroptions.New(func() *poolwatch.Pool { return pool })
	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), opts.Handle, l.Handle)
	full := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), opts.Handle)
	if len(resp.Options) != len(full.Options) {
		t.Fatalf("options dropped from a small reply: %s", resp.Summary())
	}
	if n := testutilCount(t, reg); n != 0 {
		t.Fatalf("%v options counted as dropped", n)
	}
}

// testutilCount sums vmdhcp_agent_reply_options_dropped_total.
func testutilCount(t *testing.T, reg *poolwatch.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "vmdhcp_agent_reply_options_dropped_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
