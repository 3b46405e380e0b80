package ippoollease

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/coredhcp/coredhcp/logger"
	"github.com/coredhcp/coredhcp/plugins"
	pl_dns "github.com/coredhcp/coredhcp/plugins/dns"
	pl_file "github.com/coredhcp/coredhcp/plugins/file"
	pl_searchdomains "github.com/coredhcp/coredhcp/plugins/searchdomains"
	pl_serverid "github.com/coredhcp/coredhcp/plugins/serverid"
	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// The pool bench/dhcp/run.sh --family 6 serves: 4,096 MACs, one DNS
// server, one search domain, 1 h lifetimes.
func benchPool6(b *testing.B) (*poolwatch.Pool, []net.HardwareAddr) {
	b.Helper()
	lt := 3600
	ipp := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{IPv6Config: &v1alpha1.IPv6Config{
			CIDR: "fd00:250::/64", ServerIP: "fd00:250::1", Pool: v1alpha1.IPv6Pool{Start: "fd00:250::1:0", End: "fd00:250::1:ffff"},
			DNS: []v1alpha1.IPv6Address{"fd00:250::53"}, DomainSearch: []string{"bench.example"},
			PreferredLifetime: &lt, ValidLifetime: &lt}},
		Status: v1alpha1.IPPoolStatus{IPv6: &v1alpha1.IPv6Status{Allocated: map[string]string{}}},
	}
	macs := make([]net.HardwareAddr, 4096)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0, 0, 1, byte(i >> 8), byte(i)}
		ipp.Status.IPv6.Allocated[fmt.Sprintf("fd00:250::1:%x", i)] = macs[i].String()
	}
	p, _ := poolwatch.FromIPPool(ipp) // no IPv4 half: its error is expected
	if p6, err := p.IPv6(); err != nil || len(p6.Leases) != len(macs) {
		b.Fatalf("IPv6 view: %v, %d leases", err, len(p6.Leases))
	}
	return p, macs
}

// relayed6 is what perfdhcp -6 -A1 -M sends: a Relay-Forward from a
// non-EUI-64 address wrapping a message with a DUID-LL, an elapsed time, an
// Option Request for DNS and search list, and one IA_NA (holding the
// offered address in a Request).
func relayed6(b *testing.B, mt dhcpv6.MessageType, hw net.HardwareAddr, addr netip.Addr, server dhcpv6.DUID) []byte {
	b.Helper()
	m, err := dhcpv6.NewMessage(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw}))
	if err != nil {
		b.Fatal(err)
	}
	m.MessageType = mt
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList))
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}}
	if mt == dhcpv6.MessageTypeRequest {
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: addr.AsSlice()})
		m.AddOption(dhcpv6.OptServerID(server))
	}
	m.AddOption(ia)
	relay := net.ParseIP("fd00:250::2")
	fw, err := dhcpv6.EncapsulateRelay(m, dhcpv6.MessageTypeRelayForward, relay, relay)
	if err != nil {
		b.Fatal(err)
	}
	return fw.ToBytes()
}

// serve6 is CoreDHCP's server6 per packet, minus the socket: parse, build
// the typed reply, run the chain, wrap the reply in a Relay-Reply, encode.
func serve6(buf []byte, chain []handler.Handler6) ([]byte, *dhcpv6.Message) {
	d, err := dhcpv6.FromBytes(buf)
	if err != nil {
		return nil, nil
	}
	msg, err := d.GetInnerMessage()
	if err != nil {
		return nil, nil
	}
	var resp dhcpv6.DHCPv6
	if msg.Type() == dhcpv6.MessageTypeSolicit {
		resp, err = dhcpv6.NewAdvertiseFromSolicit(msg)
	} else {
		resp, err = dhcpv6.NewReplyFromMessage(msg)
	}
	if err != nil {
		return nil, nil
	}
	for _, h := range chain {
		var stop bool
		if resp, stop = h(d, resp); stop {
			break
		}
	}
	if resp == nil {
		return nil, nil
	}
	out := resp.(*dhcpv6.Message)
	rr, err := dhcpv6.NewRelayReplFromRelayForw(d.(*dhcpv6.RelayMessage), out)
	if err != nil {
		return nil, nil
	}
	return rr.ToBytes(), out
}

// upstream6 sets up CoreDHCP's server_id, dns, searchdomains and file
// plugins once: they keep their configuration in package variables (dns
// appends to its list on every setup).
var upstream6 struct {
	once  sync.Once
	chain []handler.Handler6
	err   error
}

// BenchmarkChain6 is BenchmarkChain for DHCPv6: the agent's server6 chain
// (server_id, harvester-options, ippool-lease) against CoreDHCP's own
// (server_id, dns, searchdomains, file) on the same 4,096 leases, each
// packet parsed, answered, wrapped in a Relay-Reply and encoded as
// CoreDHCP's server6 does. Compare with a CPU profile
// (-cpuprofile), not timings alone.
func BenchmarkChain6(b *testing.B) {
	pool, macs := benchPool6(b)
	p6, _ := pool.IPv6()
	get := func() *poolwatch.Pool { return pool }
	log := logger.GetLogger("plugins")
	prev := log.Logger.GetLevel()
	log.Logger.SetLevel(logrus.ErrorLevel) // as the agent runs when measured
	b.Cleanup(func() { log.Logger.SetLevel(prev) })

	sid, err := pl_serverid.Plugin.Setup6("LL", "02:00:00:00:aa:01")
	if err != nil {
		b.Fatal(err)
	}
	upstream6.once.Do(func() {
		var leases strings.Builder
		for hw, addr := range p6.Leases {
			fmt.Fprintf(&leases, "%s %s\n", net.HardwareAddr(hw), addr)
		}
		dir, err := os.MkdirTemp("", "bench6-")
		if err != nil {
			upstream6.err = err
			return
		}
		defer os.RemoveAll(dir) // read at setup
		path := filepath.Join(dir, "leases.txt")
		if upstream6.err = os.WriteFile(path, []byte(leases.String()), 0o600); upstream6.err != nil {
			return
		}
		for _, s := range []struct {
			p    plugins.Plugin
			args []string
		}{
			{pl_dns.Plugin, []string{p6.DNS[0].String()}},
			{pl_searchdomains.Plugin, p6.DomainSearch},
			{pl_file.Plugin, []string{path}},
		} {
			h, err := s.p.Setup6(s.args...)
			if err != nil {
				upstream6.err = fmt.Errorf("set up %s: %w", s.p.Name, err)
				return
			}
			upstream6.chain = append(upstream6.chain, h)
		}
	})
	if upstream6.err != nil {
		b.Fatal(upstream6.err)
	}
	l := &Leaser6{Pool: get, Neighbors: NeighborMAC, Log: logr.Discard()}
	chains := []struct {
		name  string
		chain []handler.Handler6
	}{
		{"vm-dhcp", []handler.Handler6{sid, harvesteroptions.New6(get).Handle, l.Handle}},
		{"upstream-file", append([]handler.Handler6{sid}, upstream6.chain...)},
	}
	serverDUID := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0xaa, 1}}
	for _, c := range chains {
		for _, mt := range []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest} {
			reqs := make([][]byte, len(macs))
			for i, hw := range macs {
				reqs[i] = relayed6(b, mt, hw, p6.Leases[string(hw)], serverDUID)
			}
			b.Run(c.name+"/"+mt.String(), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						k := i % len(reqs)
						wire, out := serve6(reqs[k], c.chain)
						if wire == nil || !hasAddr(out, p6.Leases[string(macs[k])]) || out.Options.DNS() == nil {
							b.Fatalf("bad reply from %s: %v", c.name, out)
						}
						i++
					}
				})
			})
		}
	}
}

func hasAddr(m *dhcpv6.Message, want netip.Addr) bool {
	for _, ia := range m.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && got == want {
				return true
			}
		}
	}
	return false
}
