package ippoollease

import (
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
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
		if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
			t.Fatalf("reply does not parse back: %v\n%s", err, resp.Summary())
		}
	})
}
