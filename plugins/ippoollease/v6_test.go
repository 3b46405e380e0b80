package ippoollease

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/linksource"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

var (
	mac6A   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	mac6B   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	mac6X   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99} // no allocation
	addr6A  = netip.MustParseAddr("fd00:100::10")
	addr6B  = netip.MustParseAddr("fd00:100::11")
	ourDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}}
)

func dualPool6(t testing.TB) *poolwatch.Pool {
	t.Helper()
	pl, vl := 600, 1200
	ipp := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dual"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/dual", IPv6Config: &v1alpha1.IPv6Config{
			CIDR: "fd00:100::/64", ServerIP: "fd00:100::2", Pool: v1alpha1.IPv6Pool{Start: "fd00:100::10", End: "fd00:100::ff"},
			DNS: []v1alpha1.IPv6Address{"fd00:100::53"}, DomainSearch: []string{"example.com"}, NTP: []string{"fd00:100::123", "ntp.example.com"},
			PreferredLifetime: &pl, ValidLifetime: &vl}},
		Status: v1alpha1.IPPoolStatus{IPv6: &v1alpha1.IPv6Status{Allocated: map[string]string{
			addr6A.String(): mac6A.String(), addr6B.String(): mac6B.String(), "fd00:100::2": "RESERVED"}}},
	}
	p, _ := poolwatch.FromIPPool(ipp) // the IPv4 half is absent: its error is expected
	if p6, err := p.IPv6(); err != nil || !p6.Prefix.IsValid() {
		t.Fatalf("IPv6 view: %v %+v", err, p6)
	}
	return p
}

func llt(hw net.HardwareAddr) dhcpv6.DUID {
	return &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 1234, LinkLayerAddr: hw}
}

// message builds a client message with a DUID, one IA_NA holding addrs, and
// an option request for DNS, search and NTP.
func message(t testing.TB, mt dhcpv6.MessageType, duid dhcpv6.DUID, withServerID bool, addrs ...netip.Addr) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.NewMessage(dhcpv6.WithClientID(duid))
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = mt
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 7}}
	for _, a := range addrs {
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice(), PreferredLifetime: time.Hour, ValidLifetime: time.Hour})
	}
	m.AddOption(ia)
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList, dhcpv6.OptionNTPServer))
	if withServerID {
		m.AddOption(dhcpv6.OptServerID(ourDUID))
	}
	return m
}

// serve runs the message through CoreDHCP's reply construction and the two
// plugins, as the agent chains them (server ID set first, like serverid).
func serve(t testing.TB, l *Leaser6, p *poolwatch.Pool, req dhcpv6.DHCPv6) *dhcpv6.Message {
	t.Helper()
	msg, err := req.GetInnerMessage()
	if err != nil {
		t.Fatal(err)
	}
	var resp dhcpv6.DHCPv6
	if msg.Type() == dhcpv6.MessageTypeSolicit && msg.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
		resp, err = dhcpv6.NewAdvertiseFromSolicit(msg)
	} else {
		resp, err = dhcpv6.NewReplyFromMessage(msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.AddOption(dhcpv6.OptServerID(ourDUID))
	opts := harvesteroptions.New6(func() *poolwatch.Pool { return p })
	for _, h := range []func(dhcpv6.DHCPv6, dhcpv6.DHCPv6) (dhcpv6.DHCPv6, bool){l.Handle, opts.Handle} {
		var stop bool
		resp, stop = h(req, resp)
		if stop || resp == nil {
			break
		}
	}
	if resp == nil {
		return nil
	}
	// Through the wire format, as a client would read it.
	back, err := dhcpv6.FromBytes(resp.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return back.(*dhcpv6.Message)
}

func iaAddrs(m *dhcpv6.Message) map[netip.Addr]time.Duration {
	out := map[netip.Addr]time.Duration{}
	for _, ia := range m.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			got, _ := netip.AddrFromSlice(a.IPv6Addr)
			out[got] = a.ValidLifetime
		}
	}
	return out
}

func iaStatus(m *dhcpv6.Message) iana.StatusCode {
	for _, ia := range m.Options.IANA() {
		if s := ia.Options.Status(); s != nil {
			return s.StatusCode
		}
	}
	return iana.StatusSuccess
}

func TestHandle6(t *testing.T) {
	p := dualPool6(t)
	l := &Leaser6{Pool: func() *poolwatch.Pool { return p }, Log: logr.Discard()}

	// SOLICIT/ADVERTISE with lifetimes, DNS, search and NTP.
	adv := serve(t, l, p, message(t, dhcpv6.MessageTypeSolicit, llt(mac6A), false))
	if adv == nil || adv.Type() != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("solicit: %v", adv)
	}
	if got := iaAddrs(adv); len(got) != 1 || got[addr6A] != 1200*time.Second {
		t.Fatalf("advertised %v, want %s valid 1200s", got, addr6A)
	}
	if ia := adv.Options.OneIANA(); ia.T1 != 300*time.Second || ia.T2 != 480*time.Second {
		t.Fatalf("T1/T2 = %s/%s, want half and 4/5 of the preferred lifetime", ia.T1, ia.T2)
	}
	if dns := adv.Options.DNS(); len(dns) != 1 || !dns[0].Equal(net.ParseIP("fd00:100::53")) {
		t.Fatalf("DNS = %v", dns)
	}
	if s := adv.Options.DomainSearchList(); s == nil || len(s.Labels) != 1 || s.Labels[0] != "example.com" {
		t.Fatalf("search list = %v", s)
	}
	if ntp := adv.Options.Get(dhcpv6.OptionNTPServer); len(ntp) != 1 {
		t.Fatalf("NTP option missing: %v", adv.Options)
	}

	// Rapid Commit: a Reply carrying the Rapid Commit option.
	rc := message(t, dhcpv6.MessageTypeSolicit, llt(mac6A), false)
	rc.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	if r := serve(t, l, p, rc); r == nil || r.Type() != dhcpv6.MessageTypeReply || r.GetOneOption(dhcpv6.OptionRapidCommit) == nil || iaAddrs(r)[addr6A] == 0 {
		t.Fatalf("rapid commit: %v", r)
	}

	// REQUEST/REPLY, RENEW, REBIND: the same address.
	for _, mt := range []dhcpv6.MessageType{dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew} {
		r := serve(t, l, p, message(t, mt, llt(mac6A), true, addr6A))
		if r == nil || r.Type() != dhcpv6.MessageTypeReply || iaAddrs(r)[addr6A] != 1200*time.Second {
			t.Fatalf("%s: %v", mt, r)
		}
	}
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRebind, &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac6A}, false, addr6A)); r == nil || iaAddrs(r)[addr6A] == 0 {
		t.Fatalf("rebind with DUID-LL: %v", r)
	}

	// Renewing an address that is no longer its own (the VM moved): the
	// old address with lifetime 0, the new one with full lifetimes.
	r := serve(t, l, p, message(t, dhcpv6.MessageTypeRenew, llt(mac6A), true, addr6B))
	if got := iaAddrs(r); got[addr6B] != 0 || got[addr6A] != 1200*time.Second {
		t.Fatalf("renew of a foreign address: %v", got)
	}
	// An unknown client: silence for SOLICIT, NoBinding for RENEW,
	// NoAddrsAvail for REQUEST, zero lifetimes for REBIND of our prefix.
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeSolicit, llt(mac6X), false)); r != nil {
		t.Fatalf("solicit from unknown client answered: %v", r)
	}
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRenew, llt(mac6X), true, addr6A)); r == nil || iaStatus(r) != iana.StatusNoBinding || len(iaAddrs(r)) != 0 {
		t.Fatalf("renew from unknown client: %v", r)
	}
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRequest, llt(mac6X), true, addr6A)); r == nil || iaStatus(r) != iana.StatusNoAddrsAvail {
		t.Fatalf("request from unknown client: %v", r)
	}
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRebind, llt(mac6X), false, addr6A)); r == nil || iaAddrs(r)[addr6A] != 0 || len(iaAddrs(r)) != 1 {
		t.Fatalf("rebind from unknown client: %v", r)
	}

	// CONFIRM: Success for its own address, NotOnLink otherwise.
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeConfirm, llt(mac6A), false, addr6A)); r == nil || r.Options.Status() == nil || r.Options.Status().StatusCode != iana.StatusSuccess {
		t.Fatalf("confirm own: %v", r)
	}
	for _, a := range []netip.Addr{addr6B, netip.MustParseAddr("fd00:200::10")} {
		if r := serve(t, l, p, message(t, dhcpv6.MessageTypeConfirm, llt(mac6A), false, a)); r == nil || r.Options.Status() == nil || r.Options.Status().StatusCode != iana.StatusNotOnLink {
			t.Fatalf("confirm %s: %v", a, r)
		}
	}
	// RELEASE: Success; INFORMATION-REQUEST: options, no address.
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRelease, llt(mac6A), true, addr6A)); r == nil || r.Options.Status().StatusCode != iana.StatusSuccess {
		t.Fatalf("release: %v", r)
	}
	info, _ := dhcpv6.NewMessage(dhcpv6.WithClientID(llt(mac6A)))
	info.MessageType = dhcpv6.MessageTypeInformationRequest
	if r := serve(t, l, p, info); r == nil || len(r.Options.DNS()) != 1 || len(iaAddrs(r)) != 0 {
		t.Fatalf("information-request: %v", r)
	}
	// A message for another server is not ours to answer.
	other := message(t, dhcpv6.MessageTypeRequest, llt(mac6A), false, addr6A)
	other.AddOption(dhcpv6.OptServerID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac6X}))
	if r := serve(t, l, p, other); r != nil {
		t.Fatalf("request for another server answered: %v", r)
	}
}

// The client's MAC comes, in order, from relay option 79, the DUID, the
// neighbor table and a modified EUI-64 link-local peer address.
func TestClientMAC(t *testing.T) {
	p := dualPool6(t)
	neigh := map[netip.Addr]net.HardwareAddr{netip.MustParseAddr("fe80::1234"): mac6B}
	l := &Leaser6{Pool: func() *poolwatch.Pool { return p }, Log: logr.Discard(),
		Neighbors: func(a netip.Addr) (net.HardwareAddr, bool) { hw, ok := neigh[a]; return hw, ok }}
	uuid := &dhcpv6.DUIDUUID{UUID: [16]byte{1, 2, 3}}
	relay := func(inner dhcpv6.DHCPv6, peer string, opt79 net.HardwareAddr) *dhcpv6.RelayMessage {
		r, err := dhcpv6.EncapsulateRelay(inner, dhcpv6.MessageTypeRelayForward, net.ParseIP("fd00:100::1"), net.ParseIP(peer))
		if err != nil {
			t.Fatal(err)
		}
		if opt79 != nil {
			r.AddOption(dhcpv6.OptClientLinkLayerAddress(iana.HWTypeEthernet, opt79))
		}
		return r
	}
	for _, tc := range []struct {
		name string
		req  func() dhcpv6.DHCPv6
		mac  net.HardwareAddr
		how  string
	}{
		{"option 79 wins over the DUID", func() dhcpv6.DHCPv6 {
			return relay(message(t, dhcpv6.MessageTypeSolicit, llt(mac6A), false), "fe80::1", mac6B)
		}, mac6B, ByRelayOption79},
		{"DUID-LLT", func() dhcpv6.DHCPv6 { return message(t, dhcpv6.MessageTypeSolicit, llt(mac6A), false) }, mac6A, ByDUID},
		// perfdhcp -6 -A1 relays every client from its own address: the
		// relay's EUI-64 peer-address must not hide the clients' DUIDs.
		{"DUID-LL wins over an EUI-64 relay peer-address", func() dhcpv6.DHCPv6 {
			return relay(message(t, dhcpv6.MessageTypeSolicit, &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac6A}, false), "fe80::ff:fe00:b", nil)
		}, mac6A, ByDUID},
		{"DUID-UUID, relayed from a neighbor", func() dhcpv6.DHCPv6 {
			return relay(message(t, dhcpv6.MessageTypeSolicit, uuid, false), "fe80::1234", nil)
		}, mac6B, ByNeighbor},
		{"DUID-UUID, relayed from an EUI-64 link-local", func() dhcpv6.DHCPv6 {
			return relay(message(t, dhcpv6.MessageTypeSolicit, uuid, false), "fe80::ff:fe00:a", nil)
		}, mac6A, ByEUI64},
		{"DUID-UUID sent directly, no source recorded: unknown", func() dhcpv6.DHCPv6 { return message(t, dhcpv6.MessageTypeSolicit, uuid, false) }, nil, ""},
	} {
		req := tc.req()
		msg, _ := req.GetInnerMessage()
		mac, how := l.ClientMAC(req, msg)
		if mac.String() != tc.mac.String() || how != tc.how {
			t.Errorf("%s: got %s by %q, want %s by %q", tc.name, mac, how, tc.mac, tc.how)
		}
	}
	// Sent directly, the frame's Ethernet source (recorded by the packet
	// socket under the message's transaction ID and DUID) identifies it.
	l.Sources = linksource.New()
	direct := message(t, dhcpv6.MessageTypeSolicit, uuid, false)
	l.Sources.Record(direct.TransactionID, uuid.ToBytes(), linksource.Source{Addr: netip.MustParseAddr("fe80::99"), MAC: mac6B})
	if mac, how := l.ClientMAC(direct, direct); mac.String() != mac6B.String() || how != ByLinkSource {
		t.Errorf("direct DUID-UUID with a recorded source: got %s by %q, want %s by %q", mac, how, mac6B, ByLinkSource)
	}
	other := message(t, dhcpv6.MessageTypeSolicit, uuid, false) // another transaction
	if mac, how := l.ClientMAC(other, other); other.TransactionID != direct.TransactionID && mac != nil {
		t.Errorf("direct DUID-UUID without a record: got %s by %q, want none", mac, how)
	}
	if r := serve(t, l, p, direct); r == nil || iaAddrs(r)[addr6B] == 0 {
		t.Fatalf("direct DUID-UUID solicit with a recorded source: %v, want %s", r, addr6B)
	}
	// A relayed SOLICIT from an EUI-64 client is answered with its address.
	r := serve(t, l, p, relay(message(t, dhcpv6.MessageTypeSolicit, uuid, false), "fe80::ff:fe00:a", nil))
	if r == nil || iaAddrs(r)[addr6A] == 0 {
		t.Fatalf("relayed EUI-64 solicit: %v", r)
	}
}

// countingSink counts the client loggers built (WithValues) and the lines
// written.
type countingSink struct{ built, lines *atomic.Int64 }

func (s countingSink) Init(logr.RuntimeInfo)          {}
func (s countingSink) Enabled(int) bool               { return true }
func (s countingSink) Info(int, string, ...any)       { s.lines.Add(1) }
func (s countingSink) Error(error, string, ...any)    { s.lines.Add(1) }
func (s countingSink) WithValues(...any) logr.LogSink { s.built.Add(1); return s }
func (s countingSink) WithName(string) logr.LogSink   { return s }

// Answering a known client logs nothing and builds no per-client logger (a
// WithValues and the MAC's string per packet were measurable under
// perfdhcp -6); a refusal is still logged with the client's details.
func TestHandle6LogsOnlyWhatItWrites(t *testing.T) {
	p := dualPool6(t)
	var built, lines atomic.Int64
	l := &Leaser6{Pool: func() *poolwatch.Pool { return p }, Log: logr.New(countingSink{&built, &lines})}
	for _, m := range []*dhcpv6.Message{
		message(t, dhcpv6.MessageTypeSolicit, llt(mac6A), false),
		message(t, dhcpv6.MessageTypeRequest, llt(mac6A), true, addr6A),
		message(t, dhcpv6.MessageTypeRenew, llt(mac6A), true, addr6A),
	} {
		if r := serve(t, l, p, m); r == nil || iaAddrs(r)[addr6A] == 0 {
			t.Fatalf("%s: %v", m.Type(), r)
		}
	}
	if built.Load() != 0 || lines.Load() != 0 {
		t.Fatalf("known client: %d loggers built, %d lines written; want none", built.Load(), lines.Load())
	}
	if r := serve(t, l, p, message(t, dhcpv6.MessageTypeRequest, llt(mac6X), true, addr6A)); r == nil || iaStatus(r) != iana.StatusNoAddrsAvail {
		t.Fatalf("request from unknown client: %v", r)
	}
	if built.Load() != 1 || lines.Load() != 1 {
		t.Fatalf("unknown client: %d loggers built, %d lines written; want 1 and 1", built.Load(), lines.Load())
	}
}
