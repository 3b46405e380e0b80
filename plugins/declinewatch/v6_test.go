package declinewatch

import (
	"net"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/bpf"

	"github.com/vm-dhcp/vm-dhcp/plugins/linksource"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Only UDP datagrams to port 547 right after the IPv6 header reach
// userspace.
func TestFilter6KeepsOnlyDHCPv6ServerDatagrams(t *testing.T) {
	vm, err := bpf.NewVM(declineFilter6)
	if err != nil {
		t.Fatal(err)
	}
	ipv6 := func(next byte, dport uint16) []byte {
		b := make([]byte, 60)
		b[0] = 0x60
		b[6] = next
		b[42], b[43] = byte(dport>>8), byte(dport)
		return b
	}
	for _, c := range []struct {
		name   string
		pkt    []byte
		accept bool
	}{
		{"udp to 547", ipv6(17, 547), true},
		{"udp to 546", ipv6(17, 546), false},
		{"tcp to 547", ipv6(6, 547), false},
		{"icmpv6", ipv6(58, 0), false},
		{"hop-by-hop header first", ipv6(0, 547), false},
	} {
		n, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := n > 0; got != c.accept {
			t.Errorf("%s: accepted %d bytes, want accept=%v", c.name, n, c.accept)
		}
	}
}

var (
	ourID    = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0xaa, 1}}
	clientID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x32}}
)

func decline(server dhcpv6.DUID, client dhcpv6.DUID) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeDecline, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
	if client != nil {
		m.AddOption(dhcpv6.OptClientID(client))
	}
	if server != nil {
		m.AddOption(dhcpv6.OptServerID(server))
	}
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 7}}
	ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("fd00:198::32")})
	m.AddOption(ia)
	return m
}

// udp6 wraps a DHCPv6 message in an IPv6 + UDP header as the packet socket
// delivers it.
func udp6(from string, payload []byte) []byte { return udp6From(from, 546, payload) }

// udp6From is udp6 from a given source port (547 for a relay).
func udp6From(from string, sport uint16, payload []byte) []byte {
	b := make([]byte, 48, 48+len(payload))
	b[0] = 0x60
	b[6] = 17
	src := netip.MustParseAddr(from).As16()
	copy(b[8:24], src[:])
	b[40], b[41] = byte(sport>>8), byte(sport)
	b[42], b[43] = 0x02, 0x23 // 547
	return append(b, payload...)
}

type sent struct {
	payload []byte
	to      netip.AddrPort
	ifindex int
}

func newWatcher6(t *testing.T) (*Watcher6, *[]sent) {
	var out []sent
	w := &Watcher6{Metrics: poolwatch.NewRegistry(logr.Discard()).Metrics, Log: logr.Discard(), ServerID: ourID,
		Send: func(p []byte, to netip.AddrPort, ifindex int) error {
			out = append(out, sent{p, to, ifindex})
			return nil
		}}
	return w, &out
}

func TestDecline6Answered(t *testing.T) {
	w, out := newWatcher6(t)
	w.Packet(udp6("fe80::32", decline(ourID, clientID).ToBytes()), "eth1", 4, net.HardwareAddr{2, 0, 0, 0, 0, 0x32})
	if len(*out) != 1 {
		t.Fatalf("sent %d datagrams for one DECLINE to us, want 1 REPLY", len(*out))
	}
	s := (*out)[0]
	if s.to != netip.MustParseAddrPort("[fe80::32]:546") || s.ifindex != 4 {
		t.Errorf("REPLY sent to %s on ifindex %d, want [fe80::32]:546 on 4", s.to, s.ifindex)
	}
	m, err := dhcpv6.MessageFromBytes(s.payload)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type() != dhcpv6.MessageTypeReply || m.TransactionID != (dhcpv6.TransactionID{1, 2, 3}) ||
		!m.Options.ClientID().Equal(clientID) || !m.Options.ServerID().Equal(ourID) ||
		m.Options.Status() == nil || m.Options.Status().StatusCode != iana.StatusSuccess {
		t.Errorf("reply %s; want REPLY, same transaction, both DUIDs, Status Success", m.Summary())
	}
	if n := testutil.ToFloat64(w.Metrics.Declines); n != 1 {
		t.Errorf("vmdhcp_agent_declines_total %v after one DECLINE, want 1", n)
	}
}

func TestDecline6RelayedAnsweredThroughTheRelay(t *testing.T) {
	w, out := newWatcher6(t)
	relay, err := dhcpv6.EncapsulateRelay(decline(ourID, clientID), dhcpv6.MessageTypeRelayForward,
		net.ParseIP("fd00:198::1"), net.ParseIP("fe80::32"))
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(udp6From("fd00:198::1", 547, relay.ToBytes()), "eth1", 4, nil)
	if len(*out) != 1 || (*out)[0].to != netip.MustParseAddrPort("[fd00:198::1]:547") {
		t.Fatalf("sent %+v; want one RELAY-REPL to the relay's port 547", *out)
	}
	d, err := dhcpv6.FromBytes((*out)[0].payload)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type() != dhcpv6.MessageTypeRelayReply {
		t.Fatalf("sent %s, want RELAY-REPL", d.Type())
	}
	inner, err := d.GetInnerMessage()
	if err != nil || inner.Type() != dhcpv6.MessageTypeReply {
		t.Fatalf("relayed reply holds %v (%v), want REPLY", inner, err)
	}
}

// RFC 8415 16.7: a DECLINE without a Client or Server Identifier, or for
// another server, is discarded; other message types are the server's.
func TestDecline6Discarded(t *testing.T) {
	other := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0xbb, 1}}
	renew := decline(ourID, clientID)
	renew.MessageType = dhcpv6.MessageTypeRenew
	for name, m := range map[string]*dhcpv6.Message{
		"another server's": decline(other, clientID),
		"no server ID":     decline(nil, clientID),
		"no client ID":     decline(ourID, nil),
		"a RENEW":          renew,
	} {
		w, out := newWatcher6(t)
		w.Packet(udp6("fe80::32", m.ToBytes()), "eth1", 4, nil)
		if len(*out) != 0 || testutil.ToFloat64(w.Metrics.Declines) != 0 {
			t.Errorf("%s: sent %d datagrams, counted %v declines; want none", name, len(*out), testutil.ToFloat64(w.Metrics.Declines))
		}
	}
	w, out := newWatcher6(t)
	w.Packet([]byte{0x60, 0, 0}, "eth1", 4, nil) // truncated
	w.Packet(udp6("fe80::32", []byte{9}), "eth1", 4, nil)
	if len(*out) != 0 {
		t.Errorf("malformed datagrams answered: %d", len(*out))
	}
}

func TestServerIDOf(t *testing.T) {
	if id := ServerIDOf("server_id", []string{"LL", "02:00:00:00:aa:01"}); id == nil || !id.Equal(ourID) {
		t.Errorf("server_id LL 02:00:00:00:aa:01 gave %v", id)
	}
	for _, args := range [][]string{{"LL"}, {"EN", "1"}, {"LL", "nope"}} {
		if id := ServerIDOf("server_id", args); id != nil {
			t.Errorf("server_id %v gave %v, want none", args, id)
		}
	}
	if id := ServerIDOf("dns", []string{"LL", "02:00:00:00:aa:01"}); id != nil {
		t.Errorf("another plugin's args gave %v", id)
	}
}

// Every direct message whose DUID carries no Ethernet address leaves its
// source (IPv6 and Ethernet) for ippool-lease; DUID-LL/LLT and relayed
// messages leave nothing (the MAC is in the DUID, or option 79 and the
// peer-address say it).
func TestSourcesRecorded(t *testing.T) {
	w, _ := newWatcher6(t)
	w.Sources = linksource.New()
	frame := net.HardwareAddr{2, 0, 0, 0, 0, 0x77}
	en := &dhcpv6.DUIDEN{EnterpriseNumber: 43793, EnterpriseIdentifier: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	solicit := func(duid dhcpv6.DUID) *dhcpv6.Message {
		m := decline(nil, duid)
		m.MessageType = dhcpv6.MessageTypeSolicit
		return m
	}
	w.Packet(udp6("fe80::77", solicit(en).ToBytes()), "eth1", 4, frame)
	got, ok := w.Sources.Lookup([3]byte{1, 2, 3}, en.ToBytes(), 0)
	if !ok || got.MAC.String() != frame.String() || got.Addr != netip.MustParseAddr("fe80::77") {
		t.Fatalf("DUID-EN solicit: recorded %+v %v, want fe80::77 from %s", got, ok, frame)
	}
	w.Sources = linksource.New()
	w.Packet(udp6("fe80::32", solicit(clientID).ToBytes()), "eth1", 4, frame)
	relay, err := dhcpv6.EncapsulateRelay(solicit(en), dhcpv6.MessageTypeRelayForward, net.ParseIP("fd00:198::1"), net.ParseIP("fe80::77"))
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(udp6("fd00:198::1", relay.ToBytes()), "eth1", 4, frame)
	if n := w.Sources.Len(); n != 0 {
		t.Errorf("DUID-LL and relayed messages recorded %d sources, want 0", n)
	}
}

// A relay using its own source port (RFC 8357) is answered there.
func TestDecline6AnsweredToTheSourcePort(t *testing.T) {
	w, out := newWatcher6(t)
	relay, err := dhcpv6.EncapsulateRelay(decline(ourID, clientID), dhcpv6.MessageTypeRelayForward,
		net.ParseIP("fd00:198::1"), net.ParseIP("fe80::32"))
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(udp6From("fd00:198::1", 10547, relay.ToBytes()), "eth1", 4, nil)
	if len(*out) != 1 || (*out)[0].to != netip.MustParseAddrPort("[fd00:198::1]:10547") {
		t.Fatalf("sent %+v; want one RELAY-REPL to the relay's source port 10547", *out)
	}
}
