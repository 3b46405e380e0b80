package ippoollease

import (
	"net"
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/wire"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// FuzzHandlers feeds arbitrary bytes through CoreDHCP's parse and both
// handlers (options first, as in the agent's config). It must never panic,
// and every reply it builds must encode and parse back.
func FuzzHandlers(f *testing.F) {
	for _, p := range []*dhcpv4.DHCPv4{
		dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC),
		dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.OtherIP))),
		dhcptest.Packet(dhcpv4.MessageTypeInform, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP)),
		dhcptest.Packet(dhcpv4.MessageTypeRelease, dhcptest.OtherMAC),
		dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.Unknown, dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute)),
		// Issue 12: NAKs to unknown and known MACs with 82 and 61 echoed,
		// option 57 bounding the reply, a requested address off the subnet.
		dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithClientIP(dhcptest.KnownIP),
			dhcpv4.WithGatewayIP(dhcptest.Router), dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 2, 'p', '1'})),
			dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 0, 0, 0, 0, 0x99}))),
		dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 5))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(dhcptest.ServerIP))),
		dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP),
			dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(576)), dhcpv4.WithRequestedOptions(dhcpv4.OptionNTPServers, dhcpv4.OptionRouter)),
		dhcptest.Packet(dhcpv4.MessageTypeDecline, dhcptest.KnownMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP))),
	} {
		f.Add(p.ToBytes())
	}
	f.Add([]byte{})
	f.Add(make([]byte, 240))
	pool, err := poolwatch.FromIPPool(dhcptest.IPPool())
	if err != nil {
		f.Fatal(err)
	}
	get := func() *poolwatch.Pool { return pool }
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: get, Metrics: reg.Metrics, Log: logr.Discard()}
	o := harvesteroptions.New(get)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		resp := dhcptest.Serve(req, o.Handle, l.Handle)
		if resp == nil {
			return
		}
		b := resp.ToBytes()
		if _, err := dhcpv4.FromBytes(b); err != nil {
			t.Fatalf("reply does not parse back: %v\n%s", err, resp.Summary())
		}
		// Issue 12 item 13: never larger than the client accepts, unless
		// the echoed options alone are (a relay agent information or
		// client identifier of hundreds of bytes).
		echoed := len(req.Options.Get(dhcpv4.OptionRelayAgentInformation)) + len(req.Options.Get(dhcpv4.OptionClientIdentifier))
		if limit := wire.MaxReplySize(req, pool.MTU); len(b) > limit && echoed < 200 {
			t.Fatalf("reply of %d bytes, client accepts %d\n%s", len(b), limit, resp.Summary())
		}
	})
}
