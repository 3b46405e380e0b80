package ippoollease

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
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

func TestHandle(t *testing.T) {
	outside := net.IPv4(10, 0, 0, 5).To4()
	relay := net.IPv4(192, 168, 100, 250).To4()
	otherServer := net.IPv4(192, 168, 100, 3).To4()
	// Circuit-id "port7" and remote-id "sw1" (RFC 3046 sub-options 1, 2).
	relayInfo := dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 5, 'p', 'o', 'r', 't', '7', 2, 3, 's', 'w', '1'})
	clientID := dhcpv4.OptClientIdentifier([]byte{0xff, 0, 0, 0, 1, 0, 1, 2, 3})
	tests := []struct {
		name     string
		req      *dhcpv4.DHCPv4
		wantType dhcpv4.MessageType // 0: no reply
		wantIP   net.IP
		naks     float64
		unknown  float64
	}{
		{name: "discover known mac gets offer",
			req: dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), wantType: dhcpv4.MessageTypeOffer, wantIP: dhcptest.KnownIP},
		{name: "discover of second mac gets its own address",
			req: dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.OtherMAC), wantType: dhcpv4.MessageTypeOffer, wantIP: dhcptest.OtherIP},
		{name: "discover unknown mac is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.Unknown), unknown: 1},
		{name: "request selecting with option 50 gets ack",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(dhcptest.ServerIP))),
			wantType: dhcpv4.MessageTypeAck, wantIP: dhcptest.KnownIP},
		{name: "request renewing with ciaddr gets ack",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP)),
			wantType: dhcpv4.MessageTypeAck, wantIP: dhcptest.KnownIP},
		{name: "request for another address of the subnet gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.OtherIP))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "renew with a foreign ciaddr of the subnet gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.OtherIP)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		// Issue 12 item 16: a known MAC with an address of another network
		// must start over at once (RFC 2131 4.3.2).
		{name: "init-reboot of a known mac for an address outside the subnet gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(outside))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "selecting with our server id for an address outside the subnet gets nak",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(outside)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(dhcptest.ServerIP))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "renew of a known mac with a ciaddr outside the subnet gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithClientIP(outside)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "request naming another server is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(otherServer)))},
		{name: "request without any address is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC)},
		// Issue 12 item 2: a MAC whose address was freed or given to
		// another MAC is told at its next REQUEST, whatever its state.
		{name: "renew from a mac that lost its address gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithClientIP(dhcptest.KnownIP)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "rebind (broadcast) from a mac that lost its address gets nak",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithClientIP(dhcptest.KnownIP),
				dhcpv4.WithBroadcast(true)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "renew of a freed address (nobody's) from an unknown mac gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithClientIP(net.IPv4(192, 168, 100, 77))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "init-reboot from unknown mac for an address of the subnet gets nak",
			req:      dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "selecting with our server id from unknown mac for an address of the subnet gets nak",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(dhcptest.ServerIP))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "init-reboot from unknown mac for an address outside the subnet is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(outside))), unknown: 1},
		{name: "renew from unknown mac with a ciaddr outside the subnet is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithClientIP(outside)), unknown: 1},
		{name: "selecting of another server from unknown mac is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown,
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(otherServer))), unknown: 1},
		// Issue 12 item 12: the NAK echoes options 82 and 61.
		{name: "relayed nak echoes relay agent information and client identifier",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.Unknown, dhcpv4.WithGatewayIP(relay),
				dhcpv4.WithClientIP(dhcptest.KnownIP), dhcpv4.WithOption(relayInfo), dhcpv4.WithOption(clientID)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "relayed nak to a known mac echoes relay agent information and client identifier",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithGatewayIP(relay),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.OtherIP)), dhcpv4.WithOption(relayInfo), dhcpv4.WithOption(clientID)),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
		{name: "inform gets options only",
			req:      dhcptest.Packet(dhcpv4.MessageTypeInform, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP)),
			wantType: dhcpv4.MessageTypeAck, wantIP: net.IPv4zero},
		{name: "inform from unknown mac is not answered",
			req: dhcptest.Packet(dhcpv4.MessageTypeInform, dhcptest.Unknown, dhcpv4.WithClientIP(dhcptest.KnownIP)), unknown: 1},
		{name: "release is accepted without reply",
			req: dhcptest.Packet(dhcpv4.MessageTypeRelease, dhcptest.KnownMAC, dhcpv4.WithClientIP(dhcptest.KnownIP))},
		{name: "relayed discover is answered like a direct one",
			req:      dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC, dhcpv4.WithGatewayIP(relay)),
			wantType: dhcpv4.MessageTypeOffer, wantIP: dhcptest.KnownIP},
		{name: "relayed request is answered like a direct one",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithGatewayIP(relay),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.KnownIP))),
			wantType: dhcpv4.MessageTypeAck, wantIP: dhcptest.KnownIP},
		{name: "relayed nak",
			req: dhcptest.Packet(dhcpv4.MessageTypeRequest, dhcptest.KnownMAC, dhcpv4.WithGatewayIP(relay),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(dhcptest.OtherIP))),
			wantType: dhcpv4.MessageTypeNak, naks: 1},
	}
	pool := examplePool(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := poolwatch.NewRegistry(logr.Discard())
			l := &Leaser{Pool: func() *poolwatch.Pool { return pool }, Metrics: reg.Metrics, Log: logr.Discard()}
			opts := harvesteroptions.New(func() *poolwatch.Pool { return pool })
			// Same order as the generated agent config: options, then lease.
			resp := dhcptest.Serve(tc.req, opts.Handle, l.Handle)
			if got := testutil.ToFloat64(reg.Metrics.NAKs); got != tc.naks {
				t.Errorf("naks = %v, want %v", got, tc.naks)
			}
			if got := testutil.ToFloat64(reg.Metrics.UnknownMAC); got != tc.unknown {
				t.Errorf("unknown macs = %v, want %v", got, tc.unknown)
			}
			if tc.wantType == 0 {
				if resp != nil {
					t.Fatalf("got reply %s, want none", resp.Summary())
				}
				return
			}
			if resp == nil {
				t.Fatalf("got no reply, want %s", tc.wantType)
			}
			if resp.MessageType() != tc.wantType {
				t.Fatalf("reply type %s, want %s", resp.MessageType(), tc.wantType)
			}
			// Encode and decode, as the wire does.
			wire, err := dhcpv4.FromBytes(resp.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse back: %v", err)
			}
			switch tc.wantType {
			case dhcpv4.MessageTypeNak:
				checkNAK(t, tc.req, wire)
			default:
				if !wire.YourIPAddr.Equal(tc.wantIP) {
					t.Errorf("yiaddr %s, want %s", wire.YourIPAddr, tc.wantIP)
				}
			}
			if tc.req.MessageType() == dhcpv4.MessageTypeInform {
				if wire.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || wire.Options.Has(dhcpv4.OptionRenewTimeValue) || wire.Options.Has(dhcpv4.OptionRebindingTimeValue) {
					t.Errorf("ACK to INFORM carries lease times: %s", wire.Summary())
				}
				if len(wire.DNS()) == 0 {
					t.Errorf("ACK to INFORM lacks the pool's options: %s", wire.Summary())
				}
			}
		})
	}
}

func checkNAK(t *testing.T, req, nak *dhcpv4.DHCPv4) {
	t.Helper()
	if !nak.YourIPAddr.IsUnspecified() || !nak.ClientIPAddr.IsUnspecified() {
		t.Errorf("NAK carries addresses: yiaddr %s ciaddr %s", nak.YourIPAddr, nak.ClientIPAddr)
	}
	// RFC 2131 table 3: no configuration in a NAK, only 53, 54 and 56;
	// plus, echoed from the request, the relay agent information (RFC
	// 3046 2.2: in all replies) and the client identifier (RFC 6842).
	for code := range nak.Options {
		switch code {
		case dhcpv4.OptionDHCPMessageType.Code(), dhcpv4.OptionServerIdentifier.Code(), dhcpv4.OptionMessage.Code():
		case dhcpv4.OptionRelayAgentInformation.Code(), dhcpv4.OptionClientIdentifier.Code():
		default:
			t.Errorf("NAK carries option %d, allowed are 53, 54, 56 and the echoed 61 and 82", code)
		}
	}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if want, got := req.Options.Get(code), nak.Options.Get(code); !bytes.Equal(want, got) {
			t.Errorf("NAK option %s = %x, want the request's %x echoed", code, got, want)
		}
	}
	if !nak.ServerIdentifier().Equal(dhcptest.ServerIP) {
		t.Errorf("NAK server identifier %v, want %s", nak.ServerIdentifier(), dhcptest.ServerIP)
	}
	if nak.Message() == "" {
		t.Errorf("NAK has no message")
	}
	// Relayed: the relay must broadcast it (RFC 2131 4.3.2). Direct: the
	// flag is the client's own.
	if relayed := !req.GatewayIPAddr.IsUnspecified(); relayed && !nak.IsBroadcast() || !relayed && nak.IsBroadcast() != req.IsBroadcast() {
		t.Errorf("relayed %v, client broadcast %v, NAK broadcast flag %v", relayed, req.IsBroadcast(), nak.IsBroadcast())
	}
}

func TestHandleBeforeAnyPoolIsSilent(t *testing.T) {
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: func() *poolwatch.Pool { return nil }, Metrics: reg.Metrics, Log: logr.Discard()}
	if resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), l.Handle); resp != nil {
		t.Fatalf("answered %s with no pool loaded", resp.Summary())
	}
}

func TestMetricsCountRequestsAndReplies(t *testing.T) {
	pool := examplePool(t)
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: func() *poolwatch.Pool { return pool }, Metrics: reg.Metrics, Log: logr.Discard()}
	for range 3 {
		dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), l.Handle)
	}
	dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.Unknown), l.Handle)
	// Every type's series exists from the start, at 0 unless seen.
	types := []string{"DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"}
	var want strings.Builder
	want.WriteString("# HELP vmdhcp_agent_replies_total DHCPv4 replies sent, by message type.\n# TYPE vmdhcp_agent_replies_total counter\n")
	for _, ty := range types {
		n := map[string]int{"OFFER": 3}[ty]
		fmt.Fprintf(&want, "vmdhcp_agent_replies_total{type=%q} %d\n", ty, n)
	}
	want.WriteString("# HELP vmdhcp_agent_requests_total DHCPv4 requests received, by message type.\n# TYPE vmdhcp_agent_requests_total counter\n")
	for _, ty := range types {
		n := map[string]int{"DISCOVER": 4}[ty]
		fmt.Fprintf(&want, "vmdhcp_agent_requests_total{type=%q} %d\n", ty, n)
	}
	if err := testutil.GatherAndCompare(reg.Gatherer(), strings.NewReader(want.String()), "vmdhcp_agent_requests_total", "vmdhcp_agent_replies_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg.Metrics.HandleSeconds); n != 1 {
		t.Fatalf("histogram series = %d", n)
	}
}

func TestSetupRejectsBadArguments(t *testing.T) {
	reg := poolwatch.NewRegistry(logr.Discard())
	for _, args := range [][]string{
		nil,
		{"example"},
		{"default/example", "snapshot"},
		{"default/example", "snaphsot=/tmp/x"},
		{"default/example", "kubeconfig=/nonexistent/kubeconfig"},
	} {
		if _, err := Setup(reg, args...); err == nil {
			t.Errorf("Setup(%q) succeeded, want an error", args)
		}
	}
}
