package ippoollease

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/coredhcp/coredhcp/logger"
	"github.com/coredhcp/coredhcp/plugins"
	pl_dns "github.com/coredhcp/coredhcp/plugins/dns"
	pl_file "github.com/coredhcp/coredhcp/plugins/file"
	pl_leasetime "github.com/coredhcp/coredhcp/plugins/leasetime"
	pl_netmask "github.com/coredhcp/coredhcp/plugins/netmask"
	pl_router "github.com/coredhcp/coredhcp/plugins/router"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/sirupsen/logrus"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// BenchmarkChain measures both plugins on one packet, as the agent runs them
// (options, then lease), over a pool of 4,096 allocations; "upstream-file"
// is the same work done by CoreDHCP's own plugins (lease_time, router,
// netmask, dns, file) for comparison.
func BenchmarkChain(b *testing.B) {
	// The pool bench/dhcp/run.sh serves: router, one DNS server, lease
	// time, so both chains set the same options.
	ipp := dhcptest.IPPool()
	cfg := &ipp.Spec.IPv4Config
	cfg.CIDR, cfg.ServerIP, cfg.Router = "10.250.0.0/16", "10.250.0.1", "10.250.0.254"
	cfg.Pool = v1alpha1.Pool{Start: "10.250.16.0", End: "10.250.31.255"}
	cfg.DNS = []string{"10.250.0.53"}
	cfg.DomainName, cfg.DomainSearch, cfg.NTP, cfg.MTU, cfg.Routes = nil, nil, nil, nil, nil
	ipp.Status.IPv4.Allocated = map[string]string{}
	macs := make([]net.HardwareAddr, 4096)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0, 0, 1, byte(i >> 8), byte(i)}
		ipp.Status.IPv4.Allocated[fmt.Sprintf("10.250.%d.%d", 16+i>>8, i&0xff)] = macs[i].String()
	}
	pool, err := poolwatch.FromIPPool(ipp)
	if err != nil || len(pool.Leases) != 4096 {
		b.Fatalf("pool: %v, %d leases", err, len(pool.Leases))
	}
	get := func() *poolwatch.Pool { return pool }
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: get, Metrics: reg.Metrics, Log: logr.Discard()}
	o := harvesteroptions.New(get)
	chains := []struct {
		name  string
		chain []handler.Handler4
	}{
		{"vm-dhcp", []handler.Handler4{o.Handle, l.Handle}},
		{"upstream-file", upstreamChain(b, pool)},
	}
	for _, c := range chains {
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			reqs := make([]*dhcpv4.DHCPv4, len(macs))
			for i, hw := range macs {
				// As perfdhcp and most clients send: a client identifier
				// (copied into the reply) and a parameter request list.
				reqs[i] = dhcptest.Packet(mt, hw, dhcpv4.WithClientIP(pool.Leases[string(hw)].AsSlice()),
					dhcpv4.WithOption(dhcpv4.OptClientIdentifier(append([]byte{1}, hw...))),
					dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
						dhcpv4.OptionDomainName, dhcpv4.OptionBroadcastAddress, dhcpv4.OptionHostName))
			}
			b.Run(c.name+"/"+mt.String(), func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						req := reqs[i%len(reqs)]
						resp := dhcptest.Serve(req, c.chain...)
						if resp == nil || !resp.YourIPAddr.Equal(pool.Leases[string(req.ClientHWAddr)].AsSlice()) || resp.Router() == nil {
							b.Fatalf("bad reply from %s: %v", c.name, resp)
						}
						i++
					}
				})
			})
		}
	}
}

// upstreamChain sets up CoreDHCP's plugins with the same leases and options
// as the pool.
func upstreamChain(b *testing.B, pool *poolwatch.Pool) []handler.Handler4 {
	b.Helper()
	// As the agent runs when measured: the file plugin logs every reply at
	// info level.
	log := logger.GetLogger("plugins")
	prev := log.Logger.GetLevel()
	log.Logger.SetLevel(logrus.ErrorLevel)
	b.Cleanup(func() { log.Logger.SetLevel(prev) })
	var leases strings.Builder
	for hw, addr := range pool.Leases {
		fmt.Fprintf(&leases, "%s %s\n", net.HardwareAddr(hw), addr)
	}
	path := filepath.Join(b.TempDir(), "leases.txt")
	if err := os.WriteFile(path, []byte(leases.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	mask := net.IP(net.CIDRMask(pool.Subnet.Bits(), 32)).String()
	var chain []handler.Handler4
	for _, s := range []struct {
		p    plugins.Plugin
		args []string
	}{
		{pl_leasetime.Plugin, []string{pool.LeaseTime.String()}},
		{pl_router.Plugin, []string{pool.Router.String()}},
		{pl_netmask.Plugin, []string{mask}},
		{pl_dns.Plugin, []string{pool.DNS[0].String()}},
		{pl_file.Plugin, []string{path}},
	} {
		h, err := s.p.Setup4(s.args...)
		if err != nil {
			b.Fatalf("set up %s: %v", s.p.Name, err)
		}
		chain = append(chain, h)
	}
	return chain
}
